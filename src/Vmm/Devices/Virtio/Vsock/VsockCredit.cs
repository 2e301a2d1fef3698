namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// virtio-vsock credit flow control of one connection, both ways. Toward the guest: it has room for
/// buf_alloc − (tx_cnt − fwd_cnt) more bytes, from the buf_alloc and fwd_cnt of its latest header. From the guest:
/// we advertise <see cref="BufAlloc"/> and <see cref="FwdCnt"/> (bytes passed on to the host) in every header, and
/// owe it an update once a quarter buffer has gone unadvertised.
/// </summary>
internal sealed class VsockCredit(uint bufAlloc)
{
    /// <summary>Our receive buffer: the guest may have this much in flight to us.</summary>
    public uint BufAlloc { get; } = bufAlloc;

    /// <summary>Bytes we passed on to the host (our fwd_cnt).</summary>
    public uint FwdCnt { get; private set; }

    /// <summary>The fwd_cnt the guest last saw from us.</summary>
    public uint LastAdvertisedFwd { get; private set; }

    /// <summary>Bytes we sent the guest in RW packets (tx_cnt).</summary>
    public uint TxCnt { get; private set; }

    /// <summary>The guest's receive buffer and how much of what we sent it has consumed (from its latest header).</summary>
    public uint PeerBufAlloc { get; private set; }
    public uint PeerFwdCnt { get; private set; }

    /// <summary>Bytes the guest can take now; 0 when its buffer is full (or it reports a smaller buffer than is in flight).</summary>
    public uint PeerCredit
    {
        get
        {
            uint inFlight = TxCnt - PeerFwdCnt;
            return inFlight >= PeerBufAlloc ? 0 : PeerBufAlloc - inFlight;
        }
    }

    /// <summary>A quarter buffer passed on since the guest last heard: an update is due, so a guest waiting for credit is never stuck.</summary>
    public bool UpdateDue => FwdCnt - LastAdvertisedFwd >= BufAlloc / 4;

    /// <summary>Every header from the guest carries its receive-buffer state.</summary>
    public void OnPeerHeader(in VsockHeader h)
    {
        PeerBufAlloc = h.BufAlloc;
        PeerFwdCnt = h.FwdCnt;
    }

    public void Forwarded(int count) => FwdCnt += (uint)count;

    public void Sent(int count) => TxCnt += (uint)count;

    /// <summary>A header with our <see cref="FwdCnt"/> went to the guest.</summary>
    public void Advertised() => LastAdvertisedFwd = FwdCnt;
}
