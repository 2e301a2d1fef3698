// Just over 400 lines: the connection table, routing and the host listener share one lock and one epoll set
// (see the summary below); the connection state machine, credit and buffers are already split out.
using System.Diagnostics;
using Microsoft.Extensions.Logging;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// The host side of virtio-vsock, Firecracker's hybrid Unix socket: the connection table (by epoll tag and by
/// ports), the connection cap and the buffer budget (<see cref="VsockBufferBudget"/>), routing of guest packets to their <see cref="VsockConnection"/>, the queue of
/// connections and RSTs waiting for guest rx buffers, host clients on <see cref="VsockHybridListener"/> and their
/// CONNECT line and timeout, and the epoll registration of every host socket (watched only for what its connection
/// can use now). After every call into a connection it is settled: forgotten once over (RST queued if killed),
/// else queued for rx if it owes the guest a packet and re-watched. Event-loop thread only.
/// </summary>
internal sealed class VsockMuxer : IVsockBackend
{
    /// <summary>Connection-less replies (RSTs) queued for the guest before the tx queue is paused.</summary>
    public const int MaxQueuedControl = 256;

    // Epoll tags: the event loop's queues (0-2) and wake eventfd (3) are below these.
    private const ulong TagListener = 4, FirstConnectionTag = 16;

    /// <summary>A connection and its host socket; <see cref="Removed"/> once out of the table (it may linger in a queue).</summary>
    private sealed class Entry(VsockConnection connection, VsockHostSocket socket)
    {
        public VsockConnection Connection { get; } = connection;
        public VsockHostSocket Socket { get; } = socket;
        public bool InRxQueue { get; set; }
        public bool Removed { get; set; }

        /// <summary>For a host-initiated connection: when it is given up if the guest has not answered (Stopwatch ticks).</summary>
        public long ConnectDeadline { get; init; }

        /// <summary>Its buffers, reserved in the VM's buffer budget and given back when it is removed.</summary>
        public VsockReservation Buffers { get; init; }
    }

    private readonly ulong _guestCid;
    private readonly VirtioEventLoop _poller;
    private readonly VsockHybridListener _listener;
    private readonly int _maxConnections;
    private readonly TimeSpan _connectTimeout;
    private readonly string _id;
    private readonly ILogger _logger;
    private readonly Action<string> _badPacket;
    private readonly VsockBufferBudget _budget;
    private readonly GuestWarningThrottle _refusals = new();
    private readonly Dictionary<ulong, VsockConnectLine> _clients = [];
    private readonly Dictionary<ulong, Entry> _connections = [];
    private readonly Dictionary<(uint Local, uint Peer), Entry> _byPorts = [];
    private readonly Queue<VsockHeader> _control = new();
    private readonly Queue<Entry> _rxQueue = new();
    private readonly List<Entry> _connecting = [];
    private ulong _nextTag = FirstConnectionTag;
    private uint _nextLocalPort = 1u << 30;
    private long _rsts, _opened, _open;

    /// <summary>
    /// Creates the listening socket at <paramref name="udsPath"/> and watches it with <paramref name="poller"/>.
    /// Malformed guest packets are reported to <paramref name="badPacket"/> (the device logs the first).
    /// </summary>
    public VsockMuxer(ulong guestCid, string udsPath, VirtioEventLoop poller, int maxConnections, TimeSpan connectTimeout,
        string id, ILogger logger, Action<string> badPacket, long bufferBudget)
    {
        _budget = new VsockBufferBudget(bufferBudget, maxConnections);
        _guestCid = guestCid;
        _poller = poller;
        _maxConnections = maxConnections;
        _connectTimeout = connectTimeout;
        _id = id;
        _logger = logger;
        _badPacket = badPacket;
        _listener = new VsockHybridListener(udsPath);
        try
        {
            poller.Control(Epoll.EPOLL_CTL_ADD, _listener.Fd, Epoll.EPOLLIN, TagListener);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
    }

    public int ConnectionCount => _clients.Count + _connections.Count;

    /// <summary>Bytes of connection buffers reserved now, against <see cref="VsockBufferBudget.Limit"/>.</summary>
    public long BufferBytesReserved => _budget.Reserved;

    /// <summary>Connections refused at the connection limit or for want of buffer budget.</summary>
    public long ConnectionsRefused => _refusals.Occurrences;

    public long RstsSent => Interlocked.Read(ref _rsts);

    public long ConnectionsOpened => Interlocked.Read(ref _opened);

    public long ConnectionsOpen => Interlocked.Read(ref _open);

    public bool CanTakePacket => _control.Count < MaxQueuedControl;

    // ---------------------------------------------------------------- packets from the guest

    public void OnGuestPacket(in VsockHeader h, ReadOnlySpan<byte> payload)
    {
        if (h.SrcCid != _guestCid)
        {
            _badPacket($"source CID {h.SrcCid} is not the guest's ({_guestCid}); dropped");
            return;
        }
        if (h.DstCid != VsockProtocol.HostCid || h.Type != VsockProtocol.TypeStream)
        {
            _badPacket($"{VsockHeader.OpName(h.Op)} to CID {h.DstCid}, type {h.Type}: only streams to the host (CID 2) exist; RST");
            RejectPacket(h);
            return;
        }
        if (h.Op is < VsockProtocol.OpRequest or > VsockProtocol.OpCreditRequest)
        {
            _badPacket($"unknown op {h.Op}; RST");
            RejectPacket(h);
            return;
        }
        if (_byPorts.TryGetValue((h.DstPort, h.SrcPort), out var e))
        {
            e.Connection.OnGuestPacket(h, payload);
            Settle(e);
            return;
        }
        if (h.Op == VsockProtocol.OpRequest) ConnectToHost(h);
        else if (h.Op != VsockProtocol.OpRst) QueueRst(h.DstPort, h.SrcPort); // no such connection (an RST is never answered)
    }

    public void RejectPacket(in VsockHeader h)
    {
        if (h.SrcCid != _guestCid) return; // not from this guest: nothing to answer
        if (_byPorts.TryGetValue((h.DstPort, h.SrcPort), out var e))
        {
            if (h.Op == VsockProtocol.OpRst) e.Connection.Drop();
            else e.Connection.Abort();
            Settle(e);
            return;
        }
        if (h.Op != VsockProtocol.OpRst) QueueRst(h.DstPort, h.SrcPort);
    }

    /// <summary>A guest connection to host port P: connect to <c>path_P</c>; RESPONSE on success, else RST.</summary>
    private void ConnectToHost(in VsockHeader h)
    {
        if (ConnectionCount >= _maxConnections)
        {
            Refused();
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        if (_budget.TryReserve() is not { } buffers)
        {
            Refused();
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        var s = _listener.ConnectForGuest(h.DstPort, out string path, out string? error);
        if (s is null)
        {
            _budget.Release(buffers);
            if (error is not null) VsockLog.GuestConnectFailed(_logger, _id, h.DstPort, path, error);
            QueueRst(h.DstPort, h.SrcPort);
            return;
        }
        var socket = new VsockHostSocket(s, _nextTag++, _poller);
        Settle(Add(VsockConnection.GuestInitiated(socket, h, buffers), socket, buffers));
    }

    // ---------------------------------------------------------------- host sockets

    public void OnEvent(ulong tag, uint events)
    {
        if (tag == TagListener) AcceptOne();
        else if (_clients.TryGetValue(tag, out var client)) OnClientEvent(client, events);
        else if (_connections.TryGetValue(tag, out var e)) OnConnectionEvent(e, events);
    }

    private void AcceptOne()
    {
        var s = _listener.Accept();
        if (s is null) return;
        if (ConnectionCount >= _maxConnections)
        {
            Refused();
            s.Dispose();
            return;
        }
        var client = new VsockConnectLine(new VsockHostSocket(s, _nextTag++, _poller));
        _clients.Add(client.Socket.Tag, client);
        client.Socket.Watch(Epoll.EPOLLIN, hungUp: false);
    }

    private void OnClientEvent(VsockConnectLine client, uint events)
    {
        ulong tag = client.Socket.Tag;
        if ((events & Epoll.EPOLLERR) != 0)
        {
            RemoveClient(client);
            return;
        }
        if ((events & Epoll.EPOLLIN) != 0) ReadConnectLine(client);
        if ((events & Epoll.EPOLLHUP) == 0) return;
        if (_clients.ContainsKey(tag)) RemoveClient(client); // it left before finishing its line
        else if (_connections.TryGetValue(tag, out var e)) OnConnectionEvent(e, Epoll.EPOLLHUP); // it left right after it
    }

    private void OnConnectionEvent(Entry e, uint events)
    {
        var c = e.Connection;
        if ((events & Epoll.EPOLLERR) != 0) c.Abort();
        if ((events & Epoll.EPOLLOUT) != 0) c.OnHostWritable();
        Settle(e);
        if ((events & Epoll.EPOLLIN) != 0 && !e.Removed)
        {
            c.OnHostReadable();
            Settle(e);
        }
        if ((events & Epoll.EPOLLHUP) != 0 && !e.Removed)
        {
            c.OnHostHangup(); // readable data left: it is read until the end of stream; otherwise the socket is parked
            Settle(e);
        }
    }

    private void ReadConnectLine(VsockConnectLine client)
    {
        uint? port = client.TryRead(out bool gone, out string? refused);
        if (refused is not null) VsockLog.BadConnectLine(_logger, _id, refused);
        if (gone || refused is not null)
        {
            RemoveClient(client);
            return;
        }
        if (port is not { } peerPort) return;
        if (_budget.TryReserve() is not { } buffers)
        {
            Refused();
            RemoveClient(client);
            return;
        }
        _clients.Remove(client.Socket.Tag);
        uint local = AllocateLocalPort(peerPort);
        var c = VsockConnection.HostInitiated(client.Socket, _guestCid, local, peerPort, VsockHybridListener.OkLine(local), buffers);
        var e = Add(c, client.Socket, buffers, Stopwatch.GetTimestamp() + (long)(_connectTimeout.TotalSeconds * Stopwatch.Frequency));
        _connecting.Add(e);
        Settle(e);
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

    /// <summary>A connection refused at the connection limit or the buffer budget: logged, at most every few seconds.</summary>
    private void Refused()
    {
        if (_refusals.ShouldLog(out long suppressed))
            VsockLog.ConnectionRefused(_logger, _id, ConnectionCount, _maxConnections, _budget.Reserved >> 10, _budget.Limit >> 10, suppressed);
    }

    private void RemoveClient(VsockConnectLine client)
    {
        _clients.Remove(client.Socket.Tag);
        client.Socket.Close();
    }

    // ---------------------------------------------------------------- the connection table

    private Entry Add(VsockConnection c, VsockHostSocket socket, VsockReservation buffers, long connectDeadline = 0)
    {
        var e = new Entry(c, socket) { ConnectDeadline = connectDeadline, Buffers = buffers };
        _connections.Add(socket.Tag, e);
        _byPorts.Add((c.LocalPort, c.PeerPort), e);
        Interlocked.Increment(ref _opened);
        Interlocked.Increment(ref _open);
        return e;
    }

    /// <summary>After a call into its connection: forgotten if it is over (RST if killed), else queued for rx and re-watched.</summary>
    private void Settle(Entry e)
    {
        if (e.Removed) return;
        var c = e.Connection;
        if (c.IsOver)
        {
            if (c.Violation is { } violation) _badPacket(violation);
            Remove(e);
            if (c.State == VsockConnState.Killed) QueueRst(c.LocalPort, c.PeerPort);
            return;
        }
        if (!e.InRxQueue && c.HasPacketForGuest)
        {
            e.InRxQueue = true;
            _rxQueue.Enqueue(e);
        }
        e.Socket.Watch((c.WantsHostRead ? Epoll.EPOLLIN : 0) | (c.WantsHostWrite ? Epoll.EPOLLOUT : 0), c.HostClosed);
    }

    /// <summary>Forgets a connection and closes its host socket; nothing is sent to the guest.</summary>
    private void Remove(Entry e)
    {
        if (e.Removed) return;
        e.Removed = true;
        _budget.Release(e.Buffers);
        e.Connection.Drop();
        _connections.Remove(e.Socket.Tag);
        _byPorts.Remove((e.Connection.LocalPort, e.Connection.PeerPort));
        Interlocked.Decrement(ref _open);
        e.Socket.Close();
    }

    private void QueueRst(uint localPort, uint guestPort)
    {
        Interlocked.Increment(ref _rsts);
        _control.Enqueue(new VsockHeader(VsockProtocol.HostCid, _guestCid, localPort, guestPort, 0, VsockProtocol.TypeStream,
            VsockProtocol.OpRst, 0, 0, 0));
    }

    // ---------------------------------------------------------------- packets to the guest

    public bool HasPacketForGuest()
    {
        if (_control.Count > 0) return true;
        while (_rxQueue.TryPeek(out var e))
        {
            if (e.Connection.HasPacketForGuest) return true;
            _rxQueue.Dequeue();
            e.InRxQueue = false;
        }
        return false;
    }

    /// <summary>RSTs first, then the connections in the order they came to owe something.</summary>
    public VsockHeader TakePacket(int room, out ReadOnlySpan<byte> payload)
    {
        if (_control.TryDequeue(out var rst))
        {
            payload = default;
            return rst;
        }
        if (!HasPacketForGuest()) throw new InvalidOperationException("no packet is owed to the guest");
        var e = _rxQueue.Dequeue();
        e.InRxQueue = false;
        var h = e.Connection.TakePacket(room, out payload);
        Settle(e);
        return h;
    }

    // ---------------------------------------------------------------- deadlines, reset, dispose

    public int MillisecondsToNextDeadline()
    {
        if (_connecting.Count == 0) return -1;
        long next = long.MaxValue;
        foreach (var e in _connecting) next = Math.Min(next, e.ConnectDeadline);
        double ms = Math.Ceiling(Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next).TotalMilliseconds);
        return (int)Math.Clamp(ms, 0, int.MaxValue);
    }

    /// <summary>Host clients whose guest never answered their REQUEST are closed (and the guest told, if it was asked).</summary>
    public void ExpireDeadlines()
    {
        if (_connecting.Count == 0) return;
        long now = Stopwatch.GetTimestamp();
        for (int i = _connecting.Count - 1; i >= 0; i--)
        {
            var e = _connecting[i];
            if (e.Removed || e.Connection.State != VsockConnState.HostConnecting)
            {
                _connecting.RemoveAt(i);
                continue;
            }
            if (now < e.ConnectDeadline) continue;
            _connecting.RemoveAt(i);
            VsockLog.ConnectTimedOut(_logger, _id, e.Connection.PeerPort);
            e.Connection.GiveUpConnecting();
            Settle(e);
        }
    }

    public void DropAll()
    {
        foreach (var e in _connections.Values.ToList()) Remove(e);
        foreach (var client in _clients.Values.ToList()) RemoveClient(client);
        _control.Clear();
        _rxQueue.Clear();
        _connecting.Clear();
    }

    /// <summary>Closes every host socket and the listener, and removes the socket file.</summary>
    public void Dispose()
    {
        DropAll();
        _listener.Dispose();
    }
}
