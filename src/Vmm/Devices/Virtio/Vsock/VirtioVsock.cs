using System.Buffers.Binary;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// virtio-vsock (virtio 1.x, "Socket Device", device id 19): the virtio device. It owns the three queues (rx 0,
/// device to driver; tx 1, driver to device; event 2), the config space (the guest CID), features, driver and
/// transport reset, the snapshot state and the event loop; what packets mean is the host side's
/// (<see cref="IVsockBackend"/>: <see cref="VsockMuxer"/>, Firecracker's hybrid Unix socket, with one
/// <see cref="VsockConnection"/> state machine per stream).
/// <para>
/// One thread runs everything: it sleeps in epoll over the three queue eventfds, a wake eventfd and what the host
/// side registers (its sockets). Call <see cref="Attach"/> then <see cref="Start"/>, and set
/// <see cref="VirtioMmioTransport.QueueNotifyHandler"/> to <see cref="Notify"/> (or register <see cref="QueueEvent"/>
/// with KVM_IOEVENTFD); the device manager (Devices/Manager) does all of it for a VM.
/// </para>
/// <para>
/// A hostile guest cannot make the host hold unbounded memory: a tx packet without a whole header is dropped, one
/// whose len exceeds its buffer or <see cref="MaxPayload"/> gets RST, and while the guest gives no rx buffers for
/// the replies the host side has queued, the tx queue is not read. The host side bounds the rest: the connection
/// count, and every connection's buffers reserved from a per-VM budget (<see cref="DefaultBufferBudget"/>).
/// </para>
/// </summary>
public sealed class VirtioVsock : IVirtioLoopDevice, IStatefulDevice
{
    public const ushort DefaultQueueSize = 256;
    public const int DefaultMaxConnections = 1024;

    /// <summary>Our receive buffer per connection (buf_alloc); the guest may have this much in flight to us.</summary>
    public const int BufferSize = VsockConnection.BufferSize;

    /// <summary>
    /// The host memory all of a VM's vsock connections may hold (their receive windows and staging buffers): 32 MiB.
    /// 8 MiB of it is kept for the smallest buffers of all <see cref="DefaultMaxConnections"/> connections, the rest
    /// gives about 88 connections the full window at once. It is part of the VMM's memory allowance over guest memory.
    /// </summary>
    public const long DefaultBufferBudget = 32L << 20;

    /// <summary>Host bytes read ahead per connection while waiting for guest rx buffers.</summary>
    public const int StagingSize = VsockConnection.StagingSize;

    /// <summary>Largest payload accepted in one tx packet (Linux sends at most 64 KiB).</summary>
    public const int MaxPayload = 64 * 1024;

    /// <summary>How long a host client waits after its CONNECT line for the guest's RESPONSE before it is closed.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(10);

    private const uint RxBit = 1u << VsockProtocol.RxQueue, TxBit = 1u << VsockProtocol.TxQueue, EventBit = 1u << VsockProtocol.EventQueue;
    private const byte StateFormat = 1;

    private readonly ILogger _logger;
    private readonly VirtioEventLoop _loop;
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1859",
        Justification = "The device sees the host side only through IVsockBackend (the device/muxer split of issue 17); one call per packet, not worth the coupling.")]
    private readonly IVsockBackend _backend;
    private readonly byte[] _txPayload = new byte[MaxPayload];
    private int _pendingResetEvents;
    private int _driverResetRequested, _transportResetRequested;
    private bool _txPaused;
    private int _badPacketLogged;
    private long _packetsIn, _packetsOut;

    /// <summary>
    /// Creates the device and its host side: the listening socket at <see cref="VsockDeviceSpec.UdsPath"/>
    /// (validated first), at most <paramref name="maxConnections"/> connections, host clients given
    /// <paramref name="connectTimeout"/> (default <see cref="DefaultConnectTimeout"/>) for the guest's answer.
    /// </summary>
    public VirtioVsock(VsockDeviceSpec spec, ILogger? logger = null, int maxConnections = DefaultMaxConnections, ushort queueSize = DefaultQueueSize,
        TimeSpan? connectTimeout = null, long bufferBudget = DefaultBufferBudget)
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

        _loop = new VirtioEventLoop("vsock", QueueCount, 64, timeoutMs => RunOnce(timeoutMs), e => VsockLog.LoopFailed(_logger, e, Id));
        try
        {
            _backend = new VsockMuxer(GuestCid, UdsPath, _loop, MaxConnections, ConnectTimeout, Id, _logger, BadPacket, bufferBudget);
        }
        catch
        {
            _loop.Dispose();
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
    public int ConnectionCount => _backend.ConnectionCount;

    /// <summary>Bytes of connection buffers reserved now (at most the buffer budget). Event-loop thread only.</summary>
    public long BufferBytesReserved => _backend.BufferBytesReserved;

    /// <summary>Connections refused at the connection limit or the buffer budget so far.</summary>
    public long ConnectionsRefused => _backend.ConnectionsRefused;

    /// <summary>Connections opened so far and open now (any thread).</summary>
    public (long Opened, long Open) Connections => (_backend.ConnectionsOpened, _backend.ConnectionsOpen);

    /// <summary>RSTs sent to the guest, packets taken from tx, packets put on rx.</summary>
    public (long Rsts, long PacketsIn, long PacketsOut) Counters =>
        (_backend.RstsSent, Interlocked.Read(ref _packetsIn), Interlocked.Read(ref _packetsOut));

    /// <summary>The transport in front of the device (after <see cref="Attach"/>; the device manager places it into a VM).</summary>
    public VirtioMmioTransport? Transport => _loop.Transport;


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
        _loop.Wake();
    }

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

    public void Activate(ulong negotiatedFeatures) => _loop.Wake();

    /// <summary>The driver reset the device (called under the transport's lock): every connection is dropped by the loop.</summary>
    public void Reset()
    {
        Interlocked.Exchange(ref _driverResetRequested, 1);
        _loop.Wake();
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
    /// One turn of the event loop: waits up to <paramref name="timeoutMs"/> (-1 = forever; shortened to the host
    /// side's next deadline) for a queue notification or host event and handles what is ready. Returns the number
    /// of events handled. The loop thread calls this; tests without the thread call it directly (never both).
    /// </summary>
    public int RunOnce(int timeoutMs)
    {
        HandleRequests();
        if (!_loop.TryWait(WaitTimeout(timeoutMs), out var ready, out uint signalled)) return 0;
        bool rx = (signalled & RxBit) != 0, tx = (signalled & TxBit) != 0, ev = (signalled & EventBit) != 0;
        foreach (var e in ready)
            if (e.Data > _loop.WakeTag) _backend.OnEvent(e.Data, e.Events);
        HandleRequests();
        _backend.ExpireDeadlines();
        if (_loop.Transport is { } t)
        {
            if (tx) t.ProcessQueue(VsockProtocol.TxQueue);
            if (ev || _pendingResetEvents > 0) t.ProcessQueue(VsockProtocol.EventQueue);
            if (rx || _backend.HasPacketForGuest()) t.ProcessQueue(VsockProtocol.RxQueue);
            // Replies waited for rx buffers; now that some went out, take more requests.
            if (_txPaused && _backend.CanTakePacket)
            {
                _txPaused = false;
                t.ProcessQueue(VsockProtocol.TxQueue);
                if (_backend.HasPacketForGuest()) t.ProcessQueue(VsockProtocol.RxQueue);
            }
        }
        return ready.Length;
    }

    private int WaitTimeout(int timeoutMs)
    {
        int until = _backend.MillisecondsToNextDeadline();
        if (until < 0) return timeoutMs;
        return timeoutMs < 0 ? until : Math.Min(timeoutMs, until);
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
        _backend.DropAll();
        _txPaused = false;
    }

    // ---------------------------------------------------------------- the queues

    /// <summary>tx: packets from the guest, parsed and handed to the host side.</summary>
    private void DrainTx(VirtqueueContext queue)
    {
        Span<byte> raw = stackalloc byte[VsockHeader.Size];
        while (true)
        {
            // Every packet may need a reply; while the guest gives no rx buffers for them, take no more requests.
            if (!_backend.CanTakePacket)
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
                _backend.RejectPacket(h);
                continue;
            }
            _backend.OnGuestPacket(h, _txPayload.AsSpan(0, length));
        }
    }

    /// <summary>rx: the packets the host side owes the guest, one per buffer.</summary>
    private void FillRx(VirtqueueContext queue)
    {
        Span<byte> raw = stackalloc byte[VsockHeader.Size];
        while (_backend.HasPacketForGuest())
        {
            if (!queue.TryNext(out var chain)) return;
            if (chain.WritableLength < VsockHeader.Size)
            {
                queue.Complete(0); // no room for a header: the guest loses this buffer, not the packet
                BadPacket($"rx buffer of {chain.WritableLength} bytes cannot hold a header");
                continue;
            }
            Interlocked.Increment(ref _packetsOut);
            int room = (int)Math.Min(chain.WritableLength - VsockHeader.Size, (ulong)MaxPayload);
            var h = _backend.TakePacket(room, out var payload);
            h.Write(raw);
            chain.CopyToWritable(queue.Memory, 0, raw);
            if (!payload.IsEmpty) chain.CopyToWritable(queue.Memory, VsockHeader.Size, payload);
            queue.Complete((uint)(VsockHeader.Size + payload.Length));
        }
    }

    /// <summary>event: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET after a transport reset.</summary>
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
            BinaryPrimitives.WriteUInt32LittleEndian(ev, VsockProtocol.EventTransportReset);
            chain.CopyToWritable(queue.Memory, 0, ev);
            queue.Complete(4);
            _pendingResetEvents--;
        }
    }

    /// <summary>Logs the first malformed packet (of the device or the host side); later ones only count.</summary>
    private void BadPacket(string reason)
    {
        if (Interlocked.Exchange(ref _badPacketLogged, 1) == 0) VsockLog.BadPacket(_logger, Id, reason);
    }

    // ---------------------------------------------------------------- snapshots and dispose

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

    /// <summary>Stops the loop, then closes every host socket and the listener (the socket file is removed).</summary>
    public void Dispose()
    {
        if (!_loop.Stop()) return;
        var (rsts, pin, pout) = Counters;
        _backend.Dispose();
        VsockLog.Counters(_logger, Id, pin, pout, rsts);
        _loop.Dispose();
    }
}
