namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// The state machine of one vsock stream between a guest port and a host stream: handshake, credit flow control
/// (buf_alloc / fwd_cnt, both ways), half-close, RST, and bounded buffers. It knows neither the virtqueues nor the
/// sockets: the owner hands it the guest's packets (<see cref="OnGuestPacket"/>) and the host stream's readiness
/// (<see cref="OnHostReadable"/>, <see cref="OnHostWritable"/>, <see cref="OnHostHangup"/>), takes the packets it
/// owes the guest (<see cref="TakePacket"/>) while <see cref="HasPacketForGuest"/>, watches the host stream for
/// <see cref="WantsHostRead"/> / <see cref="WantsHostWrite"/>, and forgets it once <see cref="IsOver"/> (sending
/// RST when <see cref="VsockConnState.Killed"/>). Single-threaded.
/// <para>
/// Memory is bounded: at most <see cref="Window"/> (≤ <see cref="BufferSize"/>) bytes from the guest wait for the host stream (the buf_alloc
/// we advertise; a guest that sends beyond it is killed) and <see cref="StagingSize"/> bytes read from the host wait
/// for a guest rx buffer. We read the host only within the guest's credit, buf_alloc − (tx_cnt − fwd_cnt).
/// </para>
/// </summary>
internal sealed class VsockConnection
{
    /// <summary>Our receive buffer (buf_alloc); the guest may have this much in flight to us.</summary>
    public const int BufferSize = 256 * 1024;

    /// <summary>Host bytes read ahead while waiting for guest rx buffers.</summary>
    public const int StagingSize = 16 * 1024;

    private const uint ShutdownBoth = VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend;

    private byte[]? _greeting;

    // guest -> host (our receive side): bytes accepted from the guest but not yet written to the host stream.
    private readonly VsockBuffer _toHost;

    // host -> guest (our send side): bytes read from the host, not yet in a guest rx buffer.
    private readonly VsockBuffer _staged;

    // packets owed to the guest, sent in this order by TakePacket
    private bool _needRequest, _needResponse, _needCreditRequest, _needCreditUpdate;
    private uint _needShutdown;

    private VsockConnection(IVsockHostStream stream, ulong guestCid, uint localPort, uint peerPort, VsockConnState state,
        VsockReservation buffers, in VsockHeader peerHeader = default)
    {
        if (buffers.Window is <= 0 or > BufferSize) throw new ArgumentOutOfRangeException(nameof(buffers), buffers.Window, $"a receive window is 1..{BufferSize} bytes");
        if (buffers.Staging is <= 0 or > StagingSize) throw new ArgumentOutOfRangeException(nameof(buffers), buffers.Staging, $"a staging buffer is 1..{StagingSize} bytes");
        _toHost = new VsockBuffer(buffers.Window);
        _staged = new VsockBuffer(buffers.Staging);
        Credit = new VsockCredit((uint)buffers.Window);
        Credit.OnPeerHeader(peerHeader);
        Stream = stream;
        GuestCid = guestCid;
        LocalPort = localPort;
        PeerPort = peerPort;
        State = state;
    }

    /// <summary>
    /// A host client asked for guest port <paramref name="peerPort"/>: a REQUEST is owed to the guest. On its RESPONSE
    /// the connection is established and <paramref name="greeting"/> (the hybrid socket's <c>OK</c> line) is written
    /// to the host stream whole, or the connection is killed.
    /// </summary>
    public static VsockConnection HostInitiated(IVsockHostStream stream, ulong guestCid, uint localPort, uint peerPort, byte[]? greeting = null,
        VsockReservation? buffers = null) =>
        new(stream, guestCid, localPort, peerPort, VsockConnState.HostConnecting, buffers ?? FullBuffers) { _needRequest = true, _greeting = greeting };

    /// <summary>The guest's <paramref name="request"/> reached a host stream: established, a RESPONSE is owed.</summary>
    public static VsockConnection GuestInitiated(IVsockHostStream stream, in VsockHeader request, VsockReservation? buffers = null) =>
        new(stream, request.SrcCid, request.DstPort, request.SrcPort, VsockConnState.Established, buffers ?? FullBuffers, request) { _needResponse = true };

    private static readonly VsockReservation FullBuffers = new(BufferSize, StagingSize);

    public IVsockHostStream Stream { get; }
    public ulong GuestCid { get; }

    /// <summary>Host side of the vsock address (our port, as the guest sees it) and the guest's port.</summary>
    public uint LocalPort { get; }
    public uint PeerPort { get; }

    public VsockConnState State { get; private set; }

    /// <summary>Closed or killed: the owner forgets it (and closes the host stream).</summary>
    public bool IsOver => State is VsockConnState.Closed or VsockConnState.Killed;

    /// <summary>Why it was killed when the guest broke the protocol (for the log); null otherwise.</summary>
    public string? Violation { get; private set; }

    /// <summary>The host hung up: nothing more can be written to it.</summary>
    public bool HostClosed { get; private set; }

    /// <summary>The host stream ended: the host sends no more.</summary>
    public bool HostEof { get; private set; }

    /// <summary>Bytes from the guest waiting for the host stream (at most <see cref="Window"/>).</summary>
    public int ToHostCount => _toHost.Count;

    /// <summary>SHUTDOWN flags the guest sent (RCV: it reads no more; SEND: it sends no more).</summary>
    public uint GuestShutdown { get; private set; }

    /// <summary>The guest shut down both directions while data was still queued for the host: killed once it is written.</summary>
    public bool CloseAfterFlush { get; private set; }

    /// <summary>Host bytes waiting for a guest rx buffer (at most <see cref="StagingSize"/>, less when the budget is short).</summary>
    public int StagedCount => _staged.Count;

    /// <summary>Credit both ways: what the guest can take from us, what we passed on to the host.</summary>
    public VsockCredit Credit { get; }

    /// <summary>Our receive window (the buf_alloc we advertise): at most <see cref="BufferSize"/>, less when the VM's vsock budget is short.</summary>
    public int Window => _toHost.Capacity;

    public bool HasPacketForGuest =>
        !IsOver && (_needRequest || _needResponse || StagedCount > 0 || _needCreditRequest || _needCreditUpdate || _needShutdown != 0);

    /// <summary>Reading the host stream is useful now: the guest has credit, nothing is staged, and neither side stopped that direction.</summary>
    public bool WantsHostRead =>
        State == VsockConnState.Established && !HostEof && StagedCount == 0 && Credit.PeerCredit > 0 && (GuestShutdown & VsockProtocol.ShutdownRcv) == 0;

    /// <summary>Guest data waits for the host stream.</summary>
    public bool WantsHostWrite => State == VsockConnState.Established && ToHostCount > 0;

    // ---------------------------------------------------------------- packets from the guest

    /// <summary>
    /// A packet the guest sent on this connection (its ports, from this guest). Every header carries the guest's
    /// receive-buffer state. A packet the state does not allow kills the connection.
    /// </summary>
    public void OnGuestPacket(in VsockHeader h, ReadOnlySpan<byte> payload)
    {
        if (IsOver) return;
        Credit.OnPeerHeader(h);
        switch (h.Op)
        {
            case VsockProtocol.OpResponse when State == VsockConnState.HostConnecting:
                Establish();
                return;
            case VsockProtocol.OpRst:
                End(VsockConnState.Closed);
                return;
            case VsockProtocol.OpShutdown when State == VsockConnState.Established:
                OnGuestShutdown(h.Flags & ShutdownBoth);
                return;
            case VsockProtocol.OpRw when State == VsockConnState.Established:
                OnGuestData(payload);
                return;
            case VsockProtocol.OpCreditUpdate:
                return; // the new credit may make the host stream worth reading again (WantsHostRead)
            case VsockProtocol.OpCreditRequest:
                _needCreditUpdate = true;
                return;
            default:
                Kill(); // a second REQUEST, a RESPONSE nobody asked for, data or SHUTDOWN before the handshake, an unknown op
                return;
        }
    }

    private void Establish()
    {
        State = VsockConnState.Established;
        if (_greeting is not { } greeting) return;
        _greeting = null;
        if (Stream.Write(greeting, out int n) != VsockIo.Done || n != greeting.Length) Kill();
    }

    private void OnGuestData(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        if ((GuestShutdown & VsockProtocol.ShutdownSend) != 0 || HostClosed)
        {
            Kill(); // data after the guest said it would send no more, or to a host that is gone
            return;
        }
        if (ToHostCount + data.Length > Window)
        {
            Kill($"port {PeerPort} sent {data.Length} bytes with {Window - ToHostCount} bytes of credit; RST");
            return;
        }
        if (ToHostCount == 0)
        {
            int sent = TryWrite(data);
            if (sent < 0) return; // killed
            Credit.Forwarded(sent);
            data = data[sent..];
        }
        if (!data.IsEmpty) _toHost.Append(data);
        AfterForward();
    }

    private void OnGuestShutdown(uint flags)
    {
        GuestShutdown |= flags;
        if (GuestShutdown == ShutdownBoth)
        {
            if (ToHostCount == 0) Kill(); // RST is how a virtio-vsock close completes
            else CloseAfterFlush = true;
            return;
        }
        if ((flags & VsockProtocol.ShutdownSend) != 0 && ToHostCount == 0) Stream.ShutdownWrite();
        if ((flags & VsockProtocol.ShutdownRcv) != 0)
        {
            _staged.Clear(); // the guest reads no more
            Stream.ShutdownRead();
        }
    }

    // ---------------------------------------------------------------- the host stream

    /// <summary>The host stream takes data: write what waits for it.</summary>
    public void OnHostWritable()
    {
        if (IsOver || ToHostCount == 0) return;
        int sent = TryWrite(_toHost.Queued);
        if (sent < 0) return;
        _toHost.Consume(sent);
        Credit.Forwarded(sent);
        AfterForward();
    }

    /// <summary>The host stream has data (or its end): stage what the guest has credit for.</summary>
    public void OnHostReadable()
    {
        if (State != VsockConnState.Established || StagedCount > 0 || HostEof) return;
        uint credit = Credit.PeerCredit;
        if (credit == 0)
        {
            _needCreditRequest = true;
            return;
        }
        var result = Stream.Read(_staged.Space((int)Math.Min(credit, (uint)_staged.Capacity)), out int n);
        if (result == VsockIo.WouldBlock) return;
        if (result == VsockIo.Failed)
        {
            Kill();
            return;
        }
        if (n == 0)
        {
            // End of stream: the host sends no more. After a full hang-up it receives no more either, and the connection ends.
            HostEof = true;
            _needShutdown = HostClosed ? ShutdownBoth : VsockProtocol.ShutdownSend;
            return;
        }
        _staged.Commit(n);
    }

    /// <summary>The host hung up (it may still have data to read).</summary>
    public void OnHostHangup()
    {
        if (IsOver) return;
        HostClosed = true;
        if (State == VsockConnState.HostConnecting || ToHostCount > 0)
        {
            Kill(); // the client left before the guest answered, or data for the host can no longer be delivered
            return;
        }
        // Already told the guest we send no more: now it cannot send either, so end it after the SHUTDOWN.
        if (HostEof) _needShutdown = ShutdownBoth;
    }

    /// <summary>Ends it abortively (a host stream error, a malformed packet): RST owed to the guest.</summary>
    public void Abort()
    {
        if (!IsOver) Kill();
    }

    /// <summary>The guest did not answer a host-initiated REQUEST in time: forgotten, with RST if the guest saw the REQUEST.</summary>
    public void GiveUpConnecting()
    {
        if (State != VsockConnState.HostConnecting) return;
        if (_needRequest) End(VsockConnState.Closed);
        else Kill();
    }

    /// <summary>Forgets the connection without telling the guest (a reset tells it, or the device goes away).</summary>
    public void Drop()
    {
        if (!IsOver) End(VsockConnState.Closed);
    }

    /// <summary>Writes what the host stream takes now; -1 after a host error (killed).</summary>
    private int TryWrite(ReadOnlySpan<byte> data)
    {
        var result = Stream.Write(data, out int n);
        if (result == VsockIo.WouldBlock) return 0;
        if (result == VsockIo.Failed)
        {
            Kill();
            return -1;
        }
        return n;
    }

    /// <summary>After bytes went to the host: tell the guest about freed buffer space, finish a pending close.</summary>
    private void AfterForward()
    {
        if (IsOver) return;
        if (ToHostCount == 0)
        {
            if (CloseAfterFlush)
            {
                Kill(); // the guest shut down both ways; RST is how a virtio-vsock close completes
                return;
            }
            if ((GuestShutdown & VsockProtocol.ShutdownSend) != 0) Stream.ShutdownWrite();
        }
        if (Credit.UpdateDue) _needCreditUpdate = true;
    }

    // ---------------------------------------------------------------- packets to the guest

    /// <summary>
    /// Takes the next packet owed to the guest (call only while <see cref="HasPacketForGuest"/>): REQUEST or RESPONSE,
    /// else data (at most <paramref name="room"/> bytes), else CREDIT_REQUEST, else SHUTDOWN once the data is out, else
    /// CREDIT_UPDATE. Every packet advertises our buffer and fwd_cnt. <paramref name="payload"/> is valid until the
    /// next call into this connection. After SHUTDOWN both ways the connection is closed.
    /// </summary>
    public VsockHeader TakePacket(int room, out ReadOnlySpan<byte> payload)
    {
        var (op, flags, length) = NextPacket(room);
        payload = _staged.Queued[..length];
        var h = new VsockHeader(VsockProtocol.HostCid, GuestCid, LocalPort, PeerPort, (uint)length, VsockProtocol.TypeStream,
            op, flags, Credit.BufAlloc, Credit.FwdCnt);
        Credit.Advertised();
        _needCreditUpdate = false;
        if (length > 0)
        {
            _staged.Consume(length);
            Credit.Sent(length);
            // The guest's buffer is full: ask it to say when it has room (Linux also tells us unasked).
            if (Credit.PeerCredit == 0 && !HostEof) _needCreditRequest = true;
        }
        if (op == VsockProtocol.OpShutdown && flags == ShutdownBoth) End(VsockConnState.Closed);
        return h;
    }

    private (ushort Op, uint Flags, int Length) NextPacket(int room)
    {
        if (_needRequest)
        {
            _needRequest = false;
            return (VsockProtocol.OpRequest, 0, 0);
        }
        if (_needResponse)
        {
            _needResponse = false;
            return (VsockProtocol.OpResponse, 0, 0);
        }
        if (StagedCount > 0 && room > 0) return (VsockProtocol.OpRw, 0, Math.Min(room, StagedCount));
        if (_needCreditRequest)
        {
            _needCreditRequest = false;
            return (VsockProtocol.OpCreditRequest, 0, 0);
        }
        if (_needShutdown != 0 && StagedCount == 0)
        {
            uint flags = _needShutdown;
            _needShutdown = 0;
            return (VsockProtocol.OpShutdown, flags, 0);
        }
        return (VsockProtocol.OpCreditUpdate, 0, 0);
    }

    private void Kill(string? violation = null)
    {
        Violation = violation;
        End(VsockConnState.Killed);
    }

    /// <summary>The connection is over: its buffers go (a payload span already handed out keeps its array alive).</summary>
    private void End(VsockConnState state)
    {
        State = state;
        _toHost.Release();
        _staged.Release();
    }
}
