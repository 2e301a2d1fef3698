using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// virtio-vsock (virtio 1.x, "Socket Device", device id 19) with Firecracker's hybrid host side: one Unix socket
/// per VM. A host client connects to it and writes <c>CONNECT &lt;port&gt;\n</c>; the device sends the guest a
/// REQUEST and, on its RESPONSE, answers <c>OK &lt;hostport&gt;\n</c>; after that the socket carries the stream.
/// A guest connection to CID 2 port P is forwarded to the Unix socket <c>&lt;path&gt;_P</c> (RST if nothing
/// listens there).
/// <para>
/// Queues: rx (0, device to driver), tx (1, driver to device), event (2). One thread runs everything: it sleeps
/// in epoll over the three queue eventfds, a wake eventfd, the listening socket and every connection socket.
/// Call <see cref="Attach"/> then <see cref="Start"/>; set <see cref="VirtioMmioTransport.QueueNotifyHandler"/>
/// to <see cref="Notify"/> (or register <see cref="QueueEvent"/> with KVM_IOEVENTFD).
/// </para>
/// <para>
/// A hostile guest cannot make the host hold unbounded memory: each connection buffers at most
/// <see cref="BufferSize"/> bytes from the guest (the buf_alloc we advertise; a guest that sends beyond its
/// credit gets RST), at most <see cref="StagingSize"/> bytes from the host, connections are capped at
/// <see cref="MaxConnections"/> (extra REQUESTs get RST), and replies to connection-less packets are capped
/// (the tx queue waits while the guest gives no rx buffers). Bad lengths, unknown ops and types get RST;
/// a packet without a whole header is dropped.
/// </para>
/// </summary>
public sealed partial class VirtioVsock : IVirtioLoopDevice, IStatefulDevice
{
    public const ushort DefaultQueueSize = 256;
    public const int DefaultMaxConnections = 1024;

    /// <summary>Our receive buffer per connection (buf_alloc); the guest may have this much in flight to us.</summary>
    public const int BufferSize = 256 * 1024;

    /// <summary>Host bytes read ahead per connection while waiting for guest rx buffers.</summary>
    public const int StagingSize = 16 * 1024;

    /// <summary>Largest payload accepted in one tx packet (Linux sends at most 64 KiB).</summary>
    public const int MaxPayload = 64 * 1024;

    /// <summary>Longest <c>CONNECT &lt;port&gt;\n</c> line accepted from a host client.</summary>
    public const int MaxConnectLine = 32;

    /// <summary>How long a host client waits after its CONNECT line for the guest's RESPONSE before it is closed.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Connection-less replies (RSTs) queued for the guest before the tx queue is paused.</summary>
    public const int MaxQueuedControl = 256;

    // Epoll tags: the queues (0-2) and the wake eventfd (3) are the loop's; bits of what TryWait reports.
    private const ulong TagListener = 4, FirstConnectionTag = 16;
    private const uint RxBit = 1u << VsockProtocol.RxQueue, TxBit = 1u << VsockProtocol.TxQueue, EventBit = 1u << VsockProtocol.EventQueue;
    private const byte StateFormat = 1;

    private readonly ILogger _logger;
    private readonly Socket _listener;
    private readonly VirtioEventLoop _loop;
    private readonly Dictionary<ulong, VsockConnection> _byId = [];
    private readonly Dictionary<(uint Local, uint Peer), VsockConnection> _byPorts = [];
    private readonly Queue<VsockHeader> _control = new();
    private readonly Queue<VsockConnection> _rxQueue = new();
    private readonly List<VsockConnection> _connecting = [];
    private readonly byte[] _txPayload = new byte[MaxPayload];
    private ulong _nextId = FirstConnectionTag;
    private uint _nextLocalPort = 1u << 30;
    private int _pendingResetEvents;
    private int _driverResetRequested, _transportResetRequested;
    private bool _txPaused;
    private int _badPacketLogged;
    private long _rsts, _packetsIn, _packetsOut;

    /// <summary>Creates the device and its listening socket at <see cref="VsockDeviceSpec.UdsPath"/> (validated first).</summary>
    public VirtioVsock(VsockDeviceSpec spec, ILogger? logger = null, int maxConnections = DefaultMaxConnections, ushort queueSize = DefaultQueueSize,
        TimeSpan? connectTimeout = null)
    {
        ConnectTimeout = connectTimeout ?? DefaultConnectTimeout;
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        GuestCid = spec.GuestCid;
        UdsPath = spec.UdsPath;
        MaxConnections = maxConnections;
        MaxQueueSize = queueSize;
        _logger = logger ?? NullLogger.Instance;
        Id = "virtio-vsock";

        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _listener.Bind(new UnixDomainSocketEndPoint(UdsPath));
        }
        catch (SocketException e)
        {
            _listener.Dispose();
            throw new VirtioConfigException("vsock", VirtioConfigError.InvalidVsockPath, $"cannot create vsock Unix socket {UdsPath}: {e.Message}");
        }
        try
        {
            _listener.Listen(128);
            _listener.Blocking = false;
            _loop = new VirtioEventLoop("vsock", QueueCount, 64, timeoutMs => RunOnce(timeoutMs), e => VsockLog.LoopFailed(_logger, e, Id));
            _loop.Control(Epoll.EPOLL_CTL_ADD, (int)_listener.Handle, Epoll.EPOLLIN, TagListener);
        }
        catch
        {
            CloseHostSide();
            throw;
        }
    }

    public VirtioDeviceType DeviceType => VirtioDeviceType.Vsock;
    public string Id { get; }
    public string StateId => Id;
    public ulong GuestCid { get; }
    public string UdsPath { get; }
    public int MaxConnections { get; }
    public TimeSpan ConnectTimeout { get; }
    public int QueueCount => 3;
    public ushort MaxQueueSize { get; }
    public ulong DeviceFeatures => 1UL << VsockProtocol.FeatureStream;

    /// <summary>Open connections (including host clients still sending their CONNECT line). Event-loop thread only.</summary>
    public int ConnectionCount => _byId.Count;

    /// <summary>RSTs sent to the guest, packets taken from tx, packets put on rx.</summary>
    public (long Rsts, long PacketsIn, long PacketsOut) Counters =>
        (Interlocked.Read(ref _rsts), Interlocked.Read(ref _packetsIn), Interlocked.Read(ref _packetsOut));

    /// <summary>The eventfd that wakes the device for queue <paramref name="index"/> (for KVM_IOEVENTFD, datamatch = index).</summary>
    public EventFd QueueEvent(int index) => _loop.QueueEvent(index);

    /// <summary>Wakes the event loop for one queue; suitable as <see cref="VirtioMmioTransport.QueueNotifyHandler"/>.</summary>
    public void Notify(int queue) => _loop.Notify(queue);

    /// <summary>The transport in front of this device: the event loop runs its queues through it.</summary>
    public void Attach(VirtioMmioTransport transport) => _loop.Attach(this, transport);

    /// <summary>Starts the event-loop thread (after <see cref="Attach"/>).</summary>
    public void Start() => _loop.Start();

    /// <summary>
    /// Drops every connection (host sockets closed) and sends the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the
    /// event queue, so that it forgets its connections too (after a snapshot restore, or a new host socket).
    /// Thread-safe; done by the event loop.
    /// </summary>
    public void SendTransportReset()
    {
        Interlocked.Exchange(ref _transportResetRequested, 1);
        Wake();
    }

    private void Wake() => _loop.Wake();

    // ---------------------------------------------------------------- IVirtioDevice

    public void ReadConfig(uint offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(config, GuestCid);
        data.Clear();
        if (offset >= config.Length) return;
        int n = (int)Math.Min((uint)data.Length, (uint)config.Length - offset);
        config.Slice((int)offset, n).CopyTo(data);
    }

    /// <summary>guest_cid is read-only.</summary>
    public void WriteConfig(uint offset, ReadOnlySpan<byte> data) { }

    public void Activate(ulong negotiatedFeatures) => Wake();

    /// <summary>The driver reset the device (called under the transport's lock): every connection is dropped by the loop.</summary>
    public void Reset()
    {
        Interlocked.Exchange(ref _driverResetRequested, 1);
        Wake();
    }

    /// <summary>Runs on the event-loop thread (through <see cref="VirtioMmioTransport.ProcessQueue"/>).</summary>
    public void ProcessQueue(VirtqueueContext queue)
    {
        switch (queue.Index)
        {
            case VsockProtocol.RxQueue: FillRx(queue); break;
            case VsockProtocol.TxQueue: DrainTx(queue); break;
            case VsockProtocol.EventQueue: FillEvents(queue); break;
        }
    }

    // ---------------------------------------------------------------- event loop

    /// <summary>
    /// One turn of the event loop: waits up to <paramref name="timeoutMs"/> (-1 = forever) for a queue
    /// notification or socket event and handles what is ready. Returns the number of events handled. The loop
    /// thread calls this; tests without the thread call it directly (never both).
    /// </summary>
    public int RunOnce(int timeoutMs)
    {
        HandleRequests();
        if (!_loop.TryWait(WaitTimeout(timeoutMs), out var ready, out uint signalled)) return 0;
        bool rx = (signalled & RxBit) != 0, tx = (signalled & TxBit) != 0, ev = (signalled & EventBit) != 0;
        foreach (var e in ready)
        {
            if (e.Data == TagListener) AcceptOne();
            else if (e.Data >= FirstConnectionTag && _byId.TryGetValue(e.Data, out var c)) OnSocketEvent(c, e.Events);
        }
        HandleRequests();
        ExpireConnects();
        if (_loop.Transport is { } t)
        {
            if (tx) t.ProcessQueue(VsockProtocol.TxQueue);
            if (ev || _pendingResetEvents > 0) t.ProcessQueue(VsockProtocol.EventQueue);
            if (rx || HasRxWork()) t.ProcessQueue(VsockProtocol.RxQueue);
            // Replies waited for rx buffers; now that some went out, take more requests.
            if (_txPaused && _control.Count < MaxQueuedControl)
            {
                _txPaused = false;
                t.ProcessQueue(VsockProtocol.TxQueue);
                if (HasRxWork()) t.ProcessQueue(VsockProtocol.RxQueue);
            }
        }
        return ready.Length;
    }

    /// <summary>The epoll timeout: the caller's, shortened to the next host connect deadline.</summary>
    private int WaitTimeout(int timeoutMs)
    {
        if (_connecting.Count == 0) return timeoutMs;
        long next = long.MaxValue;
        foreach (var c in _connecting) next = Math.Min(next, c.ConnectDeadline);
        double ms = Math.Ceiling(Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next).TotalMilliseconds);
        int until = (int)Math.Clamp(ms, 0, int.MaxValue);
        return timeoutMs < 0 ? until : Math.Min(timeoutMs, until);
    }

    /// <summary>Host clients whose guest never answered their REQUEST are closed (and the guest told, if it was asked).</summary>
    private void ExpireConnects()
    {
        if (_connecting.Count == 0) return;
        long now = Stopwatch.GetTimestamp();
        for (int i = _connecting.Count - 1; i >= 0; i--)
        {
            var c = _connecting[i];
            if (c.Removed || c.State != VsockConnState.HostConnecting)
            {
                _connecting.RemoveAt(i);
                continue;
            }
            if (now < c.ConnectDeadline) continue;
            _connecting.RemoveAt(i);
            VsockLog.ConnectTimedOut(_logger, Id, c.PeerPort);
            if (c.NeedRequest) Remove(c); // the guest never saw it
            else Kill(c);
        }
    }

    private void HandleRequests()
    {
        if (Interlocked.Exchange(ref _driverResetRequested, 0) != 0)
        {
            DropAll();
            _pendingResetEvents = 0;
        }
        if (Interlocked.Exchange(ref _transportResetRequested, 0) != 0)
        {
            DropAll();
            _pendingResetEvents = 1;
        }
    }

    /// <summary>Closes every host socket without telling the guest (a reset tells it).</summary>
    private void DropAll()
    {
        foreach (var c in _byId.Values.ToList()) Remove(c);
        _control.Clear();
        _rxQueue.Clear();
        _connecting.Clear();
        _txPaused = false;
    }

    private bool HasRxWork()
    {
        if (_control.Count > 0) return true;
        while (_rxQueue.TryPeek(out var c))
        {
            if (c.HasPacketForGuest) return true;
            _rxQueue.Dequeue();
            c.InRxQueue = false;
        }
        return false;
    }

    // ---------------------------------------------------------------- epoll bookkeeping

    /// <summary>Makes epoll watch what the connection can use now (level-triggered, so nothing is missed).</summary>
    private void UpdateInterest(VsockConnection c)
    {
        if (c.Removed) return;
        uint want = 0;
        if (c.State == VsockConnState.AwaitingConnectLine) want |= Epoll.EPOLLIN;
        if (c.State == VsockConnState.Established)
        {
            if (!c.HostEof && c.StagedCount == 0 && c.PeerCredit > 0 && (c.GuestShutdown & VsockProtocol.ShutdownRcv) == 0)
                want |= Epoll.EPOLLIN;
            if (c.ToHostCount > 0) want |= Epoll.EPOLLOUT;
        }
        // A hung-up socket reports EPOLLHUP whatever it is asked for: keep it out of epoll until it can be read.
        if (c.HostClosed && (want & Epoll.EPOLLIN) == 0)
        {
            if (c.Interest is not null)
            {
                _loop.Remove((int)c.Socket.Handle);
                c.Interest = null;
            }
            return;
        }
        if (c.Interest == want) return;
        _loop.Control(c.Interest is null ? Epoll.EPOLL_CTL_ADD : Epoll.EPOLL_CTL_MOD, (int)c.Socket.Handle, want, c.Id);
        c.Interest = want;
    }

    private VsockConnection NewConnection(Socket socket, VsockConnState state)
    {
        var c = new VsockConnection(_nextId++, socket, state);
        _byId.Add(c.Id, c);
        return c;
    }

    /// <summary>Forgets a connection and closes its host socket; nothing is sent to the guest.</summary>
    private void Remove(VsockConnection c)
    {
        if (c.Removed) return;
        c.Removed = true;
        _byId.Remove(c.Id);
        if (c.State != VsockConnState.AwaitingConnectLine) _byPorts.Remove((c.LocalPort, c.PeerPort));
        if (c.Interest is not null)
        {
            _loop.Remove((int)c.Socket.Handle);
            c.Interest = null;
        }
        c.Socket.Dispose();
        c.ToHost = null;
        c.Staged = null;
    }

    /// <summary>Ends a connection abortively: host socket closed, RST to the guest.</summary>
    private void Kill(VsockConnection c)
    {
        bool keyed = c.State != VsockConnState.AwaitingConnectLine;
        uint local = c.LocalPort, peer = c.PeerPort;
        Remove(c);
        if (keyed) QueueRst(local, peer);
    }

    private void QueueRst(uint localPort, uint guestPort)
    {
        Interlocked.Increment(ref _rsts);
        _control.Enqueue(new VsockHeader(VsockProtocol.HostCid, GuestCid, localPort, guestPort, 0, VsockProtocol.TypeStream,
            VsockProtocol.OpRst, 0, 0, 0));
    }

    private void WantRx(VsockConnection c)
    {
        if (c.InRxQueue || !c.HasPacketForGuest) return;
        c.InRxQueue = true;
        _rxQueue.Enqueue(c);
    }

    // ---------------------------------------------------------------- dispose and snapshots

    /// <summary>The guest CID; restoring onto a device with another CID is refused.</summary>
    public byte[] SaveState()
    {
        var state = new byte[9];
        state[0] = StateFormat;
        BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(1), GuestCid);
        return state;
    }

    /// <summary>Connections do not survive a snapshot: the guest gets a transport reset event.</summary>
    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 9 || state[0] != StateFormat) throw new InvalidDataException($"{Id}: bad state");
        ulong cid = BinaryPrimitives.ReadUInt64LittleEndian(state[1..]);
        if (cid != GuestCid) throw new InvalidDataException($"{Id}: the snapshot's guest CID is {cid}, this device's is {GuestCid}");
        SendTransportReset();
    }

    public void Dispose()
    {
        if (!_loop.Stop()) return;
        foreach (var c in _byId.Values.ToList()) Remove(c);
        var (rsts, pin, pout) = Counters;
        VsockLog.Counters(_logger, Id, pin, pout, rsts);
        CloseHostSide();
    }

    private void CloseHostSide()
    {
        _listener.Dispose();
        try { File.Delete(UdsPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        _loop?.Dispose();
    }
}
