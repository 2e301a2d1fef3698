using System.Net.Sockets;

namespace FireSharp.Devices.Virtio.Vsock;

internal enum VsockConnState
{
    /// <summary>A host client connected to the VM's socket and has not finished its <c>CONNECT &lt;port&gt;\n</c> line.</summary>
    AwaitingConnectLine,

    /// <summary>REQUEST sent (or queued) to the guest; waiting for its RESPONSE or RST.</summary>
    HostConnecting,

    Established,
}

/// <summary>
/// One stream between a host Unix socket and a guest vsock port, with both directions' credit. Touched only by
/// the device's event-loop thread. Memory per connection is bounded: at most <see cref="VirtioVsock.BufferSize"/>
/// bytes from the guest waiting for the host socket, and <see cref="VirtioVsock.StagingSize"/> bytes read from
/// the host waiting for a guest rx buffer.
/// </summary>
internal sealed class VsockConnection(ulong id, Socket socket, VsockConnState state)
{
    public ulong Id { get; } = id;
    public Socket Socket { get; } = socket;
    public VsockConnState State { get; set; } = state;

    /// <summary>Host side of the vsock address (our port, as the guest sees it) and the guest's port.</summary>
    public uint LocalPort { get; set; }
    public uint PeerPort { get; set; }

    public bool Removed { get; set; }

    /// <summary>For a host-initiated connection: when it is given up if the guest has not answered (Stopwatch ticks).</summary>
    public long ConnectDeadline { get; set; }
    public bool InRxQueue { get; set; }

    /// <summary>What epoll currently watches for this socket; null = not registered (parked after a hang-up).</summary>
    public uint? Interest { get; set; }

    /// <summary>The peer hung up (EPOLLHUP): nothing more can be written to it.</summary>
    public bool HostClosed { get; set; }

    /// <summary>recv returned 0: the host will send no more.</summary>
    public bool HostEof { get; set; }

    // --- the CONNECT line of a host-initiated connection
    public byte[] Line { get; } = new byte[VirtioVsock.MaxConnectLine];
    public int LineLength { get; set; }

    // --- guest -> host (our receive side): bytes accepted from the guest but not yet written to the host socket.
    public byte[]? ToHost { get; set; }
    public int ToHostStart { get; set; }
    public int ToHostCount { get; set; }

    /// <summary>Bytes written to the host socket (advertised to the guest as fwd_cnt).</summary>
    public uint FwdCnt { get; set; }

    /// <summary>The fwd_cnt the guest last saw from us.</summary>
    public uint LastAdvertisedFwd { get; set; }

    /// <summary>SHUTDOWN flags the guest sent (RCV: it reads no more; SEND: it sends no more).</summary>
    public uint GuestShutdown { get; set; }

    /// <summary>The guest shut down both directions while data was still queued for the host: close once it is written.</summary>
    public bool CloseAfterFlush { get; set; }

    // --- host -> guest (our send side)
    public byte[]? Staged { get; set; }
    public int StagedStart { get; set; }
    public int StagedCount { get; set; }

    /// <summary>Bytes sent to the guest in RW packets.</summary>
    public uint TxCnt { get; set; }

    /// <summary>The guest's receive buffer and how much of what we sent it has consumed (from every header it sends).</summary>
    public uint PeerBufAlloc { get; set; }
    public uint PeerFwdCnt { get; set; }

    /// <summary>Bytes the guest can take now; 0 when its buffer is full (or it reports a smaller buffer than in flight).</summary>
    public uint PeerCredit
    {
        get
        {
            uint inFlight = TxCnt - PeerFwdCnt;
            return inFlight >= PeerBufAlloc ? 0 : PeerBufAlloc - inFlight;
        }
    }

    // --- packets owed to the guest, sent in this order by the rx pump
    public bool NeedRequest { get; set; }
    public bool NeedResponse { get; set; }
    public bool NeedCreditRequest { get; set; }
    public bool NeedCreditUpdate { get; set; }

    /// <summary>SHUTDOWN flags to send once the staged data is out; with both flags the connection ends after it.</summary>
    public uint NeedShutdown { get; set; }

    public bool HasPacketForGuest =>
        !Removed && (NeedRequest || NeedResponse || StagedCount > 0 || NeedCreditRequest || NeedCreditUpdate || NeedShutdown != 0);
}
