// Over 400 lines: the RX and TX paths and their offload negotiation are one device's queues; the backend
// (TapBackend), protocol constants (NetProtocol) and placement (NetDeviceKind) are already apart.
using System.Buffers.Binary;
using FireSharp.Devices.Virtio.Vsock;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// virtio-net (virtio 1.x, "Network Device", device id 1) over an <see cref="INetBackend"/> (a tap).
/// <para>
/// Queues: receiveq (0) and transmitq (1). One thread runs the device: it sleeps in epoll over both queue
/// eventfds, a wake eventfd and the backend's descriptor. Receive: a frame is read from the backend only to go
/// straight into the guest's next receive chain; when the guest has no buffers the one frame already read
/// waits and the backend is no longer watched, so the kernel's tap queue fills and drops. Nothing else is
/// buffered and nothing blocks. Transmit: each chain's readable part (header and frame) is gathered into one
/// buffer of at most <see cref="NetProtocol.MaxFrameSize"/> bytes and written.
/// </para>
/// <para>
/// Features: MAC and STATUS (link up), plus checksum and TSO offloads in both directions when the backend
/// supports them (<see cref="INetBackend.SupportedOffloads"/>); the backend is told which ones the guest
/// negotiated it can receive. No MRG_RXBUF: a guest that negotiates TSO gives 64 KiB receive chains.
/// A malformed chain (readable where writable is due or the reverse, too short or too long, a header that
/// uses an offload not negotiated) is returned unused and counted; the first of each kind is logged.
/// </para>
/// <para>Call <see cref="Attach"/> then <see cref="Start"/> (the device manager does, for a VM).</para>
/// </summary>
public sealed class VirtioNet : IVirtioLoopDevice, IStatefulDevice
{
    public const ushort DefaultQueueSize = 256;

    /// <summary>Frames moved per queue run before the loop looks at its other sources again.</summary>
    public const int Budget = 256;

    // Epoll tags: the queues (0, 1) and the wake eventfd (2) are the loop's; bits of what TryWait reports.
    private const ulong TagBackend = 3;
    private const uint RxBit = 1u << NetProtocol.RxQueue, TxBit = 1u << NetProtocol.TxQueue, WakeBit = 1u << 2;
    private const byte StateFormat = 1;

    private readonly ILogger _logger;
    private readonly INetBackend _backend;
    private readonly byte[] _mac;
    private readonly VirtioEventLoop _loop;
    private readonly byte[] _rxFrame = new byte[NetProtocol.MaxFrameSize];
    private readonly byte[] _txFrame = new byte[NetProtocol.MaxFrameSize];
    private ulong _negotiated;
    private int _rxPending;          // length of the frame waiting for a receive chain; 0 = none
    private bool _backendWatched;
    private bool _backendFailed;
    private RxOutcome _rxOutcome;
    private int _resetRequested;
    private int _loggedReasons;
    private long _rxFrames, _rxBytes, _rxDropped, _txFrames, _txBytes, _txDropped;

    private enum RxOutcome { NotRun, BackendEmpty, NoBuffers, BudgetUsed, BackendFailed }

    public VirtioNet(string id, INetBackend backend, ReadOnlySpan<byte> mac, ILogger? logger = null, ushort queueSize = DefaultQueueSize)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (mac.Length != 6) throw new ArgumentException("a MAC address is 6 bytes", nameof(mac));
        Id = "virtio-net:" + id;
        _backend = backend;
        _mac = mac.ToArray();
        _logger = logger ?? NullLogger.Instance;
        MaxQueueSize = queueSize;
        DeviceFeatures = NetProtocol.Mac | NetProtocol.Status | OffloadFeatures(backend.SupportedOffloads);

        try
        {
            _loop = new VirtioEventLoop("net", QueueCount, 8, timeoutMs => RunOnce(timeoutMs), e => NetLog.LoopFailed(_logger, e, Id));
            _loop.Control(Epoll.EPOLL_CTL_ADD, backend.Fd, Epoll.EPOLLIN, TagBackend);
            _backendWatched = true;
        }
        catch
        {
            CloseHostSide();
            throw;
        }
    }

    public VirtioDeviceType DeviceType => VirtioDeviceType.Net;
    public string Id { get; }
    public string StateId => Id;
    public int QueueCount => 2;
    public ushort MaxQueueSize { get; }
    public ulong DeviceFeatures { get; }
    public INetBackend Backend => _backend;
    public ReadOnlySpan<byte> Mac => _mac;

    /// <summary>Features the driver accepted (0 until it set DRIVER_OK).</summary>
    public ulong NegotiatedFeatures => Interlocked.Read(ref _negotiated);

    /// <summary>Frames and bytes moved each way, and frames dropped (malformed, too large, backend full).</summary>
    public (long RxFrames, long RxBytes, long RxDropped, long TxFrames, long TxBytes, long TxDropped) Counters =>
        (Interlocked.Read(ref _rxFrames), Interlocked.Read(ref _rxBytes), Interlocked.Read(ref _rxDropped),
         Interlocked.Read(ref _txFrames), Interlocked.Read(ref _txBytes), Interlocked.Read(ref _txDropped));

    /// <summary>Whether the loop currently watches the backend (false while a frame waits for guest buffers). Loop thread only.</summary>
    public bool WatchingBackend => _backendWatched;

    /// <summary>Whether one frame read from the backend waits for a guest receive buffer. Loop thread only.</summary>
    public bool HasPendingFrame => _rxPending > 0;

    /// <summary>The device feature bits for a backend's offloads: each direction only what the backend handles.</summary>
    public static ulong OffloadFeatures(NetOffloads o)
    {
        if ((o & NetOffloads.Csum) == 0) return 0;
        ulong f = NetProtocol.Csum | NetProtocol.GuestCsum;
        if ((o & NetOffloads.Tso4) != 0) f |= NetProtocol.HostTso4 | NetProtocol.GuestTso4;
        if ((o & NetOffloads.Tso6) != 0) f |= NetProtocol.HostTso6 | NetProtocol.GuestTso6;
        return f;
    }

    /// <summary>What the backend may hand the guest, from the features the driver accepted.</summary>
    public static NetOffloads ReceiveOffloads(ulong features)
    {
        if ((features & NetProtocol.GuestCsum) == 0) return NetOffloads.None;
        var o = NetOffloads.Csum;
        if ((features & NetProtocol.GuestTso4) != 0) o |= NetOffloads.Tso4;
        if ((features & NetProtocol.GuestTso6) != 0) o |= NetOffloads.Tso6;
        return o;
    }

    /// <summary>The eventfd for queue <paramref name="index"/> (for KVM_IOEVENTFD, datamatch = index).</summary>
    public EventFd QueueEvent(int index) => _loop.QueueEvent(index);

    /// <summary>Wakes the loop for one queue; suitable as <see cref="VirtioMmioTransport.QueueNotifyHandler"/>.</summary>
    public void Notify(int queue) => _loop.Notify(queue);

    public void Attach(VirtioMmioTransport transport) => _loop.Attach(this, transport);

    /// <summary>The transport in front of the device (after <see cref="Attach"/>).</summary>
    public VirtioMmioTransport? Transport => _loop.Transport;

    public void Start() => _loop.Start();

    private void Wake() => _loop.Wake();

    // ---------------------------------------------------------------- IVirtioDevice

    public void ReadConfig(uint offset, Span<byte> data)
    {
        Span<byte> config = stackalloc byte[NetProtocol.ConfigSize];
        config.Clear();
        _mac.CopyTo(config[NetProtocol.ConfigMacOffset..]);
        BinaryPrimitives.WriteUInt16LittleEndian(config[NetProtocol.ConfigStatusOffset..], NetProtocol.StatusLinkUp);
        data.Clear();
        if (offset >= config.Length) return;
        int n = (int)Math.Min((uint)data.Length, (uint)config.Length - offset);
        config.Slice((int)offset, n).CopyTo(data);
    }

    /// <summary>The MAC is read-only with VIRTIO_F_VERSION_1 (a driver sets it through the control queue, which this device lacks).</summary>
    public void WriteConfig(uint offset, ReadOnlySpan<byte> data) { }

    /// <summary>Called under the transport's lock (a vCPU thread, or a restore): tells the backend what the guest can receive.</summary>
    public void Activate(ulong negotiatedFeatures)
    {
        Interlocked.Exchange(ref _negotiated, negotiatedFeatures);
        var offloads = ReceiveOffloads(negotiatedFeatures) & _backend.SupportedOffloads;
        try
        {
            _backend.SetReceiveOffloads(offloads);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            NetLog.OffloadFailed(_logger, Id, _backend.Name, e.Message);
        }
        NetLog.Activated(_logger, Id, negotiatedFeatures, offloads);
        Wake();
    }

    /// <summary>The driver reset the device: the loop drops the waiting frame and watches the backend again.</summary>
    public void Reset()
    {
        Interlocked.Exchange(ref _negotiated, 0);
        Interlocked.Exchange(ref _resetRequested, 1);
        Wake();
    }

    /// <summary>Runs on the loop thread, through <see cref="VirtioMmioTransport.ProcessQueue"/>.</summary>
    public void ProcessQueue(VirtqueueContext queue)
    {
        switch (queue.Index)
        {
            case NetProtocol.RxQueue: FillRx(queue); break;
            case NetProtocol.TxQueue: DrainTx(queue); break;
        }
    }

    // ---------------------------------------------------------------- event loop

    /// <summary>
    /// One turn of the event loop: waits up to <paramref name="timeoutMs"/> (-1 = forever) for a queue
    /// notification, a wake-up or a frame, and handles what is ready. Returns the number of events. The loop
    /// thread calls this; tests without the thread call it directly (never both).
    /// </summary>
    public int RunOnce(int timeoutMs)
    {
        HandleReset();
        if (!_loop.TryWait(timeoutMs, out var ready, out uint signalled)) return 0;
        bool rx = (signalled & (RxBit | WakeBit)) != 0, tx = (signalled & TxBit) != 0;
        foreach (var e in ready)
        {
            if (e.Data != TagBackend) continue;
            // Level-triggered: stop watching until a receive run has emptied the backend, so that a
            // quiesced or buffer-less device does not spin on a readable tap.
            WatchBackend(false);
            rx = true;
        }
        HandleReset();
        if (_loop.Transport is { } t)
        {
            if (tx) t.ProcessQueue(NetProtocol.TxQueue);
            if (rx)
            {
                _rxOutcome = RxOutcome.NotRun;
                t.ProcessQueue(NetProtocol.RxQueue);
                switch (_rxOutcome)
                {
                    case RxOutcome.BackendEmpty:
                        WatchBackend(true);
                        break;
                    case RxOutcome.BudgetUsed:
                        // More may wait: come back after the other sources had their turn.
                        WatchBackend(true);
                        break;
                    case RxOutcome.NoBuffers:
                        // The guest's next receive-queue notification runs us again; until then the tap's queue fills.
                        WatchBackend(false);
                        break;
                    // NotRun: quiesced or not yet ready; Unquiesce and Activate notify us again.
                }
            }
        }
        return ready.Length;
    }

    private void HandleReset()
    {
        if (Interlocked.Exchange(ref _resetRequested, 0) == 0) return;
        if (_rxPending > 0) Interlocked.Increment(ref _rxDropped);
        _rxPending = 0;
        if (!_backendFailed) WatchBackend(true);
    }

    private void WatchBackend(bool watch)
    {
        if (watch == _backendWatched || (watch && _backendFailed)) return;
        _loop.Control(Epoll.EPOLL_CTL_MOD, _backend.Fd, watch ? Epoll.EPOLLIN : 0, TagBackend);
        _backendWatched = watch;
    }

    // ---------------------------------------------------------------- receive

    private void FillRx(VirtqueueContext queue)
    {
        for (int i = 0; i < Budget; i++)
        {
            if (_rxPending == 0)
            {
                if (_backendFailed)
                {
                    _rxOutcome = RxOutcome.BackendFailed;
                    return;
                }
                int n;
                try
                {
                    n = _backend.Read(_rxFrame);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException)
                {
                    _backendFailed = true;
                    NetLog.BackendFailed(_logger, Id, _backend.Name, e.Message);
                    _rxOutcome = RxOutcome.BackendFailed;
                    return;
                }
                if (n == 0)
                {
                    _rxOutcome = RxOutcome.BackendEmpty;
                    return;
                }
                if (n < NetProtocol.MinFrameSize)
                {
                    DropRx("shorter than a header and an Ethernet header");
                    continue;
                }
                PrepareRxHeader(_rxFrame.AsSpan(0, NetProtocol.HeaderSize));
                _rxPending = n;
            }

            if (!queue.TryNext(out var chain))
            {
                _rxOutcome = RxOutcome.NoBuffers;
                return;
            }
            uint written = 0;
            if (chain.FirstWritable != 0)
            {
                // A receive chain the device may read from is malformed: give it back unused, keep the frame.
                Interlocked.Increment(ref _rxDropped);
                LogOnce(1, "rx", "a receive chain with device-readable buffers");
                queue.Complete(0);
                continue;
            }
            if (chain.WritableLength < (ulong)_rxPending)
            {
                DropRx($"a {_rxPending}-byte frame does not fit a {chain.WritableLength}-byte receive chain");
            }
            else
            {
                written = (uint)chain.CopyToWritable(queue.Memory, 0, _rxFrame.AsSpan(0, _rxPending));
                Interlocked.Increment(ref _rxFrames);
                Interlocked.Add(ref _rxBytes, _rxPending - NetProtocol.HeaderSize);
                _rxPending = 0;
            }
            queue.Complete(written);
        }
        _rxOutcome = RxOutcome.BudgetUsed;
    }

    /// <summary>
    /// The backend wrote the 10-byte legacy header; num_buffers (bytes 10-11) is ours: 1, as there is no
    /// MRG_RXBUF. Flags the guest did not negotiate are cleared (DATA_VALID without GUEST_CSUM).
    /// </summary>
    private void PrepareRxHeader(Span<byte> header)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(header[NetProtocol.NumBuffersOffset..], 1);
        if ((Interlocked.Read(ref _negotiated) & NetProtocol.GuestCsum) == 0) header[0] = 0;
    }

    private void DropRx(string reason)
    {
        _rxPending = 0;
        Interlocked.Increment(ref _rxDropped);
        LogOnce(2, "rx", reason);
    }

    // ---------------------------------------------------------------- transmit

    private void DrainTx(VirtqueueContext queue)
    {
        ulong features = Interlocked.Read(ref _negotiated);
        for (int i = 0; i < Budget; i++)
        {
            if (!queue.TryNext(out var chain)) return;
            string? bad = null;
            ulong length = chain.ReadableLength;
            if (chain.FirstWritable != chain.Count) bad = "a transmit chain with device-writable buffers";
            else if (length < NetProtocol.MinFrameSize) bad = $"a {length}-byte transmit chain (shorter than a header and an Ethernet header)";
            else if (length > NetProtocol.MaxFrameSize) bad = $"a {length}-byte transmit chain (more than {NetProtocol.MaxFrameSize})";
            if (bad is null)
            {
                var frame = _txFrame.AsSpan(0, (int)length);
                chain.CopyFromReadable(queue.Memory, 0, frame);
                bad = CheckTxHeader(frame, features);
                if (bad is null)
                {
                    switch (_backend.Write(frame))
                    {
                        case NetWriteResult.Sent:
                            Interlocked.Increment(ref _txFrames);
                            Interlocked.Add(ref _txBytes, (long)length - NetProtocol.HeaderSize);
                            break;
                        case NetWriteResult.WouldBlock:
                            Interlocked.Increment(ref _txDropped);
                            break;
                        default:
                            bad = "the backend refused it";
                            break;
                    }
                }
            }
            if (bad is not null)
            {
                Interlocked.Increment(ref _txDropped);
                LogOnce(3, "tx", bad);
            }
            queue.Complete(0);
        }
        // Budget used: come back for the rest after the other sources.
        Notify(NetProtocol.TxQueue);
    }

    /// <summary>A header may only use what was negotiated: NEEDS_CSUM needs CSUM, each GSO type its HOST_ feature.</summary>
    private static string? CheckTxHeader(ReadOnlySpan<byte> frame, ulong features)
    {
        byte flags = frame[0], gso = frame[1];
        if ((flags & NetProtocol.HeaderFlagNeedsCsum) != 0 && (features & NetProtocol.Csum) == 0)
            return "NEEDS_CSUM without the CSUM feature";
        if ((flags & ~(NetProtocol.HeaderFlagNeedsCsum | NetProtocol.HeaderFlagDataValid)) != 0) return $"unknown header flags 0x{flags:x}";
        ulong needed = (gso & ~NetProtocol.GsoEcn) switch
        {
            NetProtocol.GsoNone => 0,
            NetProtocol.GsoTcpV4 => NetProtocol.HostTso4,
            NetProtocol.GsoTcpV6 => NetProtocol.HostTso6,
            _ => ulong.MaxValue,
        };
        if (needed == ulong.MaxValue || (gso & NetProtocol.GsoEcn) != 0) return $"GSO type 0x{gso:x} is not offered";
        if ((features & needed) != needed) return $"GSO type 0x{gso:x} was not negotiated";
        return null;
    }

    private void LogOnce(int reason, string direction, string text)
    {
        int bit = 1 << reason;
        if ((Interlocked.Or(ref _loggedReasons, bit) & bit) == 0) NetLog.Dropped(_logger, Id, direction, text);
    }

    // ---------------------------------------------------------------- snapshots and dispose

    /// <summary>The MAC (format 1). Negotiated features and queues are the transport's; a waiting frame is not kept.</summary>
    public byte[] SaveState()
    {
        var state = new byte[7];
        state[0] = StateFormat;
        _mac.CopyTo(state, 1);
        return state;
    }

    /// <summary>Refuses another MAC (a restored guest keeps its address); the new backend starts empty.</summary>
    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 7 || state[0] != StateFormat) throw new InvalidDataException($"{Id}: bad state");
        if (!state[1..].SequenceEqual(_mac))
            throw new InvalidDataException($"{Id}: the snapshot's MAC is {NetworkInterfaceSpec.FormatMac(state[1..])}, this device's is {NetworkInterfaceSpec.FormatMac(_mac)}");
        Interlocked.Exchange(ref _resetRequested, 1);
        Wake();
    }

    public void Dispose()
    {
        if (!_loop.Stop()) return;
        var c = Counters;
        NetLog.Counters(_logger, Id, c.RxFrames, c.RxBytes, c.RxDropped, c.TxFrames, c.TxBytes, c.TxDropped);
        CloseHostSide();
    }

    private void CloseHostSide()
    {
        _loop?.Dispose();
        _backend.Dispose();
    }
}
