using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>The packet side of <see cref="VirtioVsock"/>: tx from the guest, rx to it, and the host sockets. Event-loop thread only.</summary>
public sealed partial class VirtioVsock
{
    // ---------------------------------------------------------------- tx: packets from the guest

    private void DrainTx(VirtqueueContext queue)
    {
        Span<byte> raw = stackalloc byte[VsockHeader.Size];
        while (true)
        {
            // Every packet may need a reply; while the guest gives no rx buffers for them, take no more requests.
            if (_control.Count >= MaxQueuedControl)
            {
                _txPaused = true;
                return;
            }
            if (!queue.TryNext(out var chain)) return;
            Interlocked.Increment(ref _packetsIn);
            if (chain.ReadableLength < VsockHeader.Size)
            {
                queue.Complete(0);
                BadPacket($"tx buffer of {chain.ReadableLength} bytes cannot hold a {VsockHeader.Size}-byte header; dropped");
                continue;
            }
            chain.CopyFromReadable(queue.Memory, 0, raw);
            var h = VsockHeader.Read(raw);
            ulong available = chain.ReadableLength - VsockHeader.Size;
            bool badLength = h.Len > available || h.Len > MaxPayload || (h.Op != VsockProtocol.OpRw && h.Len != 0);
            int length = badLength ? 0 : (int)h.Len;
            if (length > 0) chain.CopyFromReadable(queue.Memory, VsockHeader.Size, _txPayload.AsSpan(0, length));
            queue.Complete(0);
            if (badLength)
            {
                BadPacket($"{VsockHeader.OpName(h.Op)} with len {h.Len} but {available} payload bytes (at most {MaxPayload}); RST");
                RejectPacket(h);
                continue;
            }
            HandleGuestPacket(h, _txPayload.AsSpan(0, length));
        }
    }

    /// <summary>Answers a packet with RST (and ends its connection, if any). An RST itself is never answered.</summary>
    private void RejectPacket(in VsockHeader h)
    {
        if (h.SrcCid != GuestCid) return; // not from this guest: nothing to answer
        if (_byPorts.TryGetValue((h.DstPort, h.SrcPort), out var c))
        {
            if (h.Op == VsockProtocol.OpRst) Remove(c);
            else Kill(c);
            return;
        }
        if (h.Op != VsockProtocol.OpRst) QueueRst(h.DstPort, h.SrcPort);
    }

    private void HandleGuestPacket(in VsockHeader h, ReadOnlySpan<byte> payload)
    {
        if (h.SrcCid != GuestCid)
        {
            BadPacket($"source CID {h.SrcCid} is not the guest's ({GuestCid}); dropped");
            return;
        }
        if (h.DstCid != VsockProtocol.HostCid || h.Type != VsockProtocol.TypeStream)
        {
            BadPacket($"{VsockHeader.OpName(h.Op)} to CID {h.DstCid}, type {h.Type}: only streams to the host (CID 2) exist; RST");
            RejectPacket(h);
            return;
        }
        _byPorts.TryGetValue((h.DstPort, h.SrcPort), out var c);
        if (c is not null)
        {
            // Every header carries the guest's receive-buffer state.
            c.PeerBufAlloc = h.BufAlloc;
            c.PeerFwdCnt = h.FwdCnt;
        }
        switch (h.Op)
        {
            case VsockProtocol.OpRequest:
                if (c is not null)
                {
                    RejectPacket(h); // a second REQUEST on a live connection: both are gone
                    return;
                }
                ConnectToHost(h);
                return;
            case VsockProtocol.OpResponse:
                if (c is not { State: VsockConnState.HostConnecting })
                {
                    RejectPacket(h);
                    return;
                }
                c.State = VsockConnState.Established;
                if (!SendAll(c.Socket, Encoding.ASCII.GetBytes($"OK {c.LocalPort}\n")))
                {
                    Kill(c);
                    return;
                }
                UpdateInterest(c);
                return;
            case VsockProtocol.OpRst:
                if (c is not null) Remove(c);
                return;
            case VsockProtocol.OpShutdown:
                if (c is not { State: VsockConnState.Established })
                {
                    RejectPacket(h);
                    return;
                }
                OnGuestShutdown(c, h.Flags & (VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend));
                return;
            case VsockProtocol.OpRw:
                if (c is not { State: VsockConnState.Established })
                {
                    RejectPacket(h);
                    return;
                }
                OnGuestData(c, payload);
                return;
            case VsockProtocol.OpCreditUpdate:
                if (c is null)
                {
                    RejectPacket(h);
                    return;
                }
                UpdateInterest(c); // more credit may let us read the host socket again
                return;
            case VsockProtocol.OpCreditRequest:
                if (c is null)
                {
                    RejectPacket(h);
                    return;
                }
                c.NeedCreditUpdate = true;
                WantRx(c);
                return;
            default:
                BadPacket($"unknown op {h.Op}; RST");
                RejectPacket(h);
                return;
        }
    }

    /// <summary>A guest connection to CID 2 port P: connect to <c>path_P</c>; RESPONSE on success, else RST.</summary>
    private void ConnectToHost(in VsockHeader h)
    {
        if (_byId.Count >= MaxConnections)
        {
            VsockLog.TooManyConnections(_logger, Id, MaxConnections);
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        string path = VsockDeviceSpec.GuestInitiatedPath(UdsPath, h.DstPort);
        if (Encoding.UTF8.GetByteCount(path) > VsockDeviceSpec.MaxUnixPathBytes)
        {
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            // Non-blocking: a listener with a full backlog refuses (EAGAIN) instead of stalling the loop.
            s.Blocking = false;
            s.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e)
        {
            s.Dispose();
            VsockLog.GuestConnectFailed(_logger, Id, h.DstPort, path, e.SocketErrorCode.ToString());
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        var c = NewConnection(s, VsockConnState.Established);
        c.LocalPort = h.DstPort;
        c.PeerPort = h.SrcPort;
        c.PeerBufAlloc = h.BufAlloc;
        c.PeerFwdCnt = h.FwdCnt;
        _byPorts.Add((c.LocalPort, c.PeerPort), c);
        c.NeedResponse = true;
        WantRx(c);
        UpdateInterest(c);
    }

    private void OnGuestData(VsockConnection c, ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        if ((c.GuestShutdown & VsockProtocol.ShutdownSend) != 0 || c.HostClosed)
        {
            Kill(c); // data after the guest said it would send no more, or to a host that is gone
            return;
        }
        if (c.ToHostCount + data.Length > BufferSize)
        {
            BadPacket($"port {c.PeerPort} sent {data.Length} bytes with {BufferSize - c.ToHostCount} bytes of credit; RST");
            Kill(c);
            return;
        }
        if (c.ToHostCount == 0)
        {
            int sent = TrySend(c, data);
            if (sent < 0) return; // killed
            c.FwdCnt += (uint)sent;
            data = data[sent..];
        }
        if (!data.IsEmpty)
        {
            c.ToHost ??= new byte[BufferSize];
            if (c.ToHostStart + c.ToHostCount + data.Length > BufferSize)
            {
                c.ToHost.AsSpan(c.ToHostStart, c.ToHostCount).CopyTo(c.ToHost);
                c.ToHostStart = 0;
            }
            data.CopyTo(c.ToHost.AsSpan(c.ToHostStart + c.ToHostCount));
            c.ToHostCount += data.Length;
        }
        AfterForward(c);
    }

    /// <summary>Sends what the host socket takes now; -1 after killing the connection for a host error.</summary>
    private int TrySend(VsockConnection c, ReadOnlySpan<byte> data)
    {
        int n = c.Socket.Send(data, SocketFlags.None, out var err);
        if (err == SocketError.WouldBlock) return 0;
        if (err != SocketError.Success)
        {
            Kill(c);
            return -1;
        }
        return n;
    }

    /// <summary>After bytes went to the host: tell the guest about freed buffer space, finish a pending close.</summary>
    private void AfterForward(VsockConnection c)
    {
        if (c.Removed) return;
        if (c.ToHostCount == 0)
        {
            if (c.CloseAfterFlush)
            {
                Kill(c); // the guest shut down both ways; RST is how a virtio-vsock close completes
                return;
            }
            if ((c.GuestShutdown & VsockProtocol.ShutdownSend) != 0) TryShutdown(c.Socket, SocketShutdown.Send);
        }
        // Unadvertised progress of a quarter buffer: an update, so a guest waiting for credit is never stuck.
        if (c.FwdCnt - c.LastAdvertisedFwd >= BufferSize / 4)
        {
            c.NeedCreditUpdate = true;
            WantRx(c);
        }
        UpdateInterest(c);
    }

    private void OnGuestShutdown(VsockConnection c, uint flags)
    {
        c.GuestShutdown |= flags;
        if (c.GuestShutdown == (VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend))
        {
            if (c.ToHostCount == 0) Kill(c);
            else c.CloseAfterFlush = true;
            return;
        }
        if ((flags & VsockProtocol.ShutdownSend) != 0 && c.ToHostCount == 0) TryShutdown(c.Socket, SocketShutdown.Send);
        if ((flags & VsockProtocol.ShutdownRcv) != 0)
        {
            c.StagedCount = 0; // the guest reads no more
            TryShutdown(c.Socket, SocketShutdown.Receive);
        }
        UpdateInterest(c);
    }

    private static void TryShutdown(Socket s, SocketShutdown how)
    {
        try { s.Shutdown(how); }
        catch (SocketException) { }
    }

    private static bool SendAll(Socket s, ReadOnlySpan<byte> data)
    {
        int n = s.Send(data, SocketFlags.None, out var err);
        return err == SocketError.Success && n == data.Length;
    }

    // ---------------------------------------------------------------- host sockets

    private void AcceptOne()
    {
        Socket s;
        try
        {
            s = _listener.Accept();
        }
        catch (SocketException)
        {
            return; // EAGAIN (another event took it) or a client that left before we accepted
        }
        if (_byId.Count >= MaxConnections)
        {
            VsockLog.TooManyConnections(_logger, Id, MaxConnections);
            s.Dispose();
            return;
        }
        s.Blocking = false;
        var c = NewConnection(s, VsockConnState.AwaitingConnectLine);
        UpdateInterest(c);
    }

    private void OnSocketEvent(VsockConnection c, uint events)
    {
        if ((events & Epoll.EPOLLERR) != 0)
        {
            Kill(c);
            return;
        }
        if ((events & Epoll.EPOLLOUT) != 0) FlushToHost(c);
        if (c.Removed) return;
        if ((events & Epoll.EPOLLIN) != 0) ReadFromHost(c);
        if (c.Removed) return;
        if ((events & Epoll.EPOLLHUP) != 0) OnHostHangup(c);
    }

    private void OnHostHangup(VsockConnection c)
    {
        c.HostClosed = true;
        switch (c.State)
        {
            case VsockConnState.AwaitingConnectLine:
                Remove(c);
                return;
            case VsockConnState.HostConnecting:
                Kill(c); // the client left before the guest answered
                return;
        }
        if (c.ToHostCount > 0)
        {
            Kill(c); // data for the host can no longer be delivered
            return;
        }
        if (c.HostEof)
        {
            // Already told the guest we send no more; now it cannot send either: end it after the SHUTDOWN.
            c.NeedShutdown = VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend;
            WantRx(c);
        }
        UpdateInterest(c); // readable data left: keep reading until EOF; otherwise parked
    }

    private void FlushToHost(VsockConnection c)
    {
        if (c.ToHostCount == 0 || c.ToHost is null) return;
        int sent = TrySend(c, c.ToHost.AsSpan(c.ToHostStart, c.ToHostCount));
        if (sent < 0) return;
        c.ToHostStart += sent;
        c.ToHostCount -= sent;
        c.FwdCnt += (uint)sent;
        if (c.ToHostCount == 0) c.ToHostStart = 0;
        AfterForward(c);
    }

    private void ReadFromHost(VsockConnection c)
    {
        if (c.State == VsockConnState.AwaitingConnectLine)
        {
            ReadConnectLine(c);
            return;
        }
        if (c.State != VsockConnState.Established || c.StagedCount > 0 || c.HostEof) return;
        uint credit = c.PeerCredit;
        if (credit == 0)
        {
            c.NeedCreditRequest = true;
            WantRx(c);
            UpdateInterest(c);
            return;
        }
        c.Staged ??= new byte[StagingSize];
        int want = (int)Math.Min(credit, (uint)StagingSize);
        int n = c.Socket.Receive(c.Staged.AsSpan(0, want), SocketFlags.None, out var err);
        if (err == SocketError.WouldBlock) return;
        if (err != SocketError.Success)
        {
            Kill(c);
            return;
        }
        if (n == 0)
        {
            // EOF: the host sends no more. After a full hang-up it receives no more either, and the connection ends.
            c.HostEof = true;
            c.NeedShutdown = c.HostClosed ? VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend : VsockProtocol.ShutdownSend;
            WantRx(c);
            UpdateInterest(c);
            return;
        }
        c.StagedStart = 0;
        c.StagedCount = n;
        WantRx(c);
        UpdateInterest(c);
    }

    /// <summary>Reads <c>CONNECT &lt;port&gt;\n</c> without consuming anything after the newline (it belongs to the stream).</summary>
    private void ReadConnectLine(VsockConnection c)
    {
        Span<byte> peek = stackalloc byte[MaxConnectLine];
        int room = MaxConnectLine - c.LineLength;
        int n = c.Socket.Receive(peek[..room], SocketFlags.Peek, out var err);
        if (err == SocketError.WouldBlock) return;
        if (err != SocketError.Success || n == 0)
        {
            Remove(c);
            return;
        }
        int newline = peek[..n].IndexOf((byte)'\n');
        int take = newline >= 0 ? newline + 1 : n;
        int got = c.Socket.Receive(c.Line.AsSpan(c.LineLength, take), SocketFlags.None, out err);
        if (err != SocketError.Success || got != take)
        {
            Remove(c);
            return;
        }
        c.LineLength += take;
        if (newline < 0)
        {
            if (c.LineLength >= MaxConnectLine) RefuseClient(c, "no newline");
            return;
        }
        var line = Encoding.ASCII.GetString(c.Line, 0, c.LineLength - 1).TrimEnd('\r');
        if (!line.StartsWith("CONNECT ", StringComparison.Ordinal)
            || !uint.TryParse(line.AsSpan(8), NumberStyles.None, CultureInfo.InvariantCulture, out uint port))
        {
            RefuseClient(c, "not 'CONNECT <port>'");
            return;
        }
        c.LocalPort = AllocateLocalPort(port);
        c.PeerPort = port;
        c.State = VsockConnState.HostConnecting;
        _byPorts.Add((c.LocalPort, c.PeerPort), c);
        c.NeedRequest = true;
        c.ConnectDeadline = Stopwatch.GetTimestamp() + (long)(ConnectTimeout.TotalSeconds * Stopwatch.Frequency);
        _connecting.Add(c);
        WantRx(c);
        UpdateInterest(c);
    }

    private void RefuseClient(VsockConnection c, string why)
    {
        VsockLog.BadConnectLine(_logger, Id, why);
        Remove(c);
    }

    private uint AllocateLocalPort(uint peerPort)
    {
        while (true)
        {
            uint p = _nextLocalPort++;
            if (_nextLocalPort == 0) _nextLocalPort = 1u << 30;
            if (!_byPorts.ContainsKey((p, peerPort))) return p;
        }
    }

    // ---------------------------------------------------------------- rx: packets to the guest

    private void FillRx(VirtqueueContext queue)
    {
        Span<byte> raw = stackalloc byte[VsockHeader.Size];
        while (HasRxWork())
        {
            if (!queue.TryNext(out var chain)) return;
            if (chain.WritableLength < VsockHeader.Size)
            {
                queue.Complete(0); // no room for a header: the guest loses this buffer, not the packet
                BadPacket($"rx buffer of {chain.WritableLength} bytes cannot hold a header");
                continue;
            }
            Interlocked.Increment(ref _packetsOut);
            if (_control.TryDequeue(out var rst))
            {
                rst.Write(raw);
                chain.CopyToWritable(queue.Memory, 0, raw);
                queue.Complete(VsockHeader.Size);
                continue;
            }
            var c = _rxQueue.Dequeue();
            c.InRxQueue = false;
            int room = (int)Math.Min(chain.WritableLength - VsockHeader.Size, (ulong)MaxPayload);
            var (op, flags, length) = NextPacket(c, room);
            var h = new VsockHeader(VsockProtocol.HostCid, GuestCid, c.LocalPort, c.PeerPort, (uint)length, VsockProtocol.TypeStream,
                op, flags, BufferSize, c.FwdCnt);
            h.Write(raw);
            chain.CopyToWritable(queue.Memory, 0, raw);
            if (length > 0) chain.CopyToWritable(queue.Memory, VsockHeader.Size, c.Staged.AsSpan(c.StagedStart, length));
            queue.Complete((uint)(VsockHeader.Size + length));
            c.LastAdvertisedFwd = c.FwdCnt;
            c.NeedCreditUpdate = false;
            if (length > 0)
            {
                c.StagedStart += length;
                c.StagedCount -= length;
                c.TxCnt += (uint)length;
                // The guest's buffer is full: ask it to say when it has room (Linux also tells us unasked).
                if (c.PeerCredit == 0 && !c.HostEof) c.NeedCreditRequest = true;
                if (c.StagedCount == 0) UpdateInterest(c);
            }
            if (op == VsockProtocol.OpShutdown && flags == (VsockProtocol.ShutdownRcv | VsockProtocol.ShutdownSend)) Remove(c);
            else WantRx(c);
        }
    }

    /// <summary>Picks the connection's next packet (and clears what it owes): handshake, data, credit, then shutdown.</summary>
    private static (ushort Op, uint Flags, int Length) NextPacket(VsockConnection c, int room)
    {
        if (c.NeedRequest)
        {
            c.NeedRequest = false;
            return (VsockProtocol.OpRequest, 0, 0);
        }
        if (c.NeedResponse)
        {
            c.NeedResponse = false;
            return (VsockProtocol.OpResponse, 0, 0);
        }
        if (c.StagedCount > 0 && room > 0) return (VsockProtocol.OpRw, 0, Math.Min(room, c.StagedCount));
        if (c.NeedCreditRequest)
        {
            c.NeedCreditRequest = false;
            return (VsockProtocol.OpCreditRequest, 0, 0);
        }
        if (c.NeedShutdown != 0 && c.StagedCount == 0)
        {
            uint flags = c.NeedShutdown;
            c.NeedShutdown = 0;
            return (VsockProtocol.OpShutdown, flags, 0);
        }
        c.NeedCreditUpdate = false;
        return (VsockProtocol.OpCreditUpdate, 0, 0);
    }

    private void FillEvents(VirtqueueContext queue)
    {
        Span<byte> ev = stackalloc byte[4];
        while (_pendingResetEvents > 0 && queue.TryNext(out var chain))
        {
            if (chain.WritableLength < 4)
            {
                queue.Complete(0);
                continue;
            }
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(ev, VsockProtocol.EventTransportReset);
            chain.CopyToWritable(queue.Memory, 0, ev);
            queue.Complete(4);
            _pendingResetEvents--;
        }
    }

    private void BadPacket(string reason)
    {
        if (Interlocked.Exchange(ref _badPacketLogged, 1) == 0) VsockLog.BadPacket(_logger, Id, reason);
    }
}
