// Over 400 lines: the virtio-mmio register file (virtio 1.x section 4.2.2) is one state machine with the
// feature/status/queue-setup rules the spec ties together; the queues themselves are in Virtqueue.
using System.Buffers.Binary;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// The virtio-mmio transport, modern layout (version 2; virtio 1.x "Virtio Over MMIO"), in front of one
/// <see cref="IVirtioDevice"/>. It implements the registers, feature negotiation (VERSION_1 required;
/// EVENT_IDX and INDIRECT_DESC offered), queue setup, status and reset, the interrupt status and the
/// config window at 0x100.
/// <para>
/// Threads: register accesses come from vCPU threads; queues are processed by <see cref="ProcessQueue"/>,
/// called on the device's own thread (its <see cref="VirtioEventLoop"/>, which the device manager runs), or
/// inline from the QueueNotify write when no <see cref="QueueNotifyHandler"/> is set. <see cref="Gate"/> is held
/// by control-register accesses and by the ring accesses of a request (taking a chain, returning it), never
/// while a device works on a chain: no register access waits for device I/O. InterruptStatus, InterruptACK and
/// QueueNotify never take it at all.
/// </para>
/// <para>
/// A driver error (a malformed queue, features without VERSION_1) never reaches the host: the queue stops,
/// the device sets DEVICE_NEEDS_RESET, raises a configuration-change interrupt and logs the first time.
/// Nothing is processed until the driver resets the device by writing 0 to Status.
/// </para>
/// <para>
/// Longer than 400 lines on purpose: it is one register file, and its state machine, the queue runs and the
/// snapshot encoding of that state share every field.
/// </para>
/// </summary>
public sealed class VirtioMmioTransport : IBusDevice, IStatefulDevice
{
    /// <summary>Size of the MMIO window of one device.</summary>
    public const ulong WindowSize = 0x1000;

    private const byte StateFormat = 1;

    private readonly object _gate = new();
    private readonly IVirtioDevice _device;
    private readonly IInterruptLine _interrupt;
    private readonly ILogger _logger;
    private readonly Virtqueue[] _queues;
    private readonly VirtqueueContext[] _contexts;
    private readonly QueueRun[] _runs;

    private uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel, _shmSel;
    private ulong _driverFeatures;
    private uint _status;
    private int _interruptStatus;
    private uint _configGeneration;
    private int _needsResetCount;
    private int _quiesced;
    private int _layoutEpoch;

    public VirtioMmioTransport(IVirtioDevice device, GuestMemory memory, IInterruptLine interrupt, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(interrupt);
        if (device.QueueCount is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(device), "a device has 1..1024 queues");
        _device = device;
        Memory = memory;
        _interrupt = interrupt;
        _logger = logger ?? NullLogger.Instance;
        _queues = new Virtqueue[device.QueueCount];
        _contexts = new VirtqueueContext[device.QueueCount];
        _runs = new QueueRun[device.QueueCount];
        for (int i = 0; i < _queues.Length; i++)
        {
            _queues[i] = new Virtqueue(device.MaxQueueSize);
            _contexts[i] = new VirtqueueContext(this, i, _queues[i]);
            _runs[i] = new QueueRun();
        }
    }

    public IVirtioDevice Device => _device;
    public GuestMemory Memory { get; }
    public IReadOnlyList<Virtqueue> Queues => _queues;

    /// <summary>Everything offered: the device's bits plus VERSION_1, EVENT_IDX and INDIRECT_DESC.</summary>
    public ulong OfferedFeatures => _device.DeviceFeatures | VirtioFeatures.Transport;

    /// <summary>What the driver accepted (meaningful once FEATURES_OK is set).</summary>
    public ulong DriverFeatures { get { lock (_gate) return _driverFeatures; } }

    public uint Status => Volatile.Read(ref _status);
    public uint InterruptStatus => (uint)Volatile.Read(ref _interruptStatus);
    public uint ConfigGeneration => Volatile.Read(ref _configGeneration);
    public bool NeedsReset => (Status & VirtioStatus.DeviceNeedsReset) != 0;

    /// <summary>
    /// Where a QueueNotify register write goes (argument: the queue index): typically the device's
    /// <see cref="VirtioEventLoop.Notify"/>. Null processes the queue inline, on the writing thread.
    /// </summary>
    public Action<int>? QueueNotifyHandler { get; set; }

    public string StateId => "virtio-mmio:" + _device.Id;

    /// <summary>Held while control registers change and while a request's chain is taken from or returned to its ring.</summary>
    internal object Gate => _gate;

    /// <summary>
    /// Changes (under <see cref="Gate"/>) whenever a reset, a QueueReady write or a restore may have changed a
    /// ring's layout: a chain taken before belongs to the old rings and is not returned into the new ones.
    /// </summary>
    internal int LayoutEpoch => Volatile.Read(ref _layoutEpoch);

    public void Read(ulong offset, Span<byte> data)
    {
        if (offset >= VirtioMmioRegister.Config)
        {
            _device.ReadConfig((uint)(offset - VirtioMmioRegister.Config), data);
            return;
        }
        // Registers are 32-bit only (virtio-mmio: "the driver MUST use only 32 bit wide and aligned reads").
        if (data.Length != 4 || offset % 4 != 0)
        {
            data.Clear();
            return;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(data, ReadRegister((uint)offset));
    }

    private uint ReadRegister(uint offset)
    {
        switch (offset)
        {
            case VirtioMmioRegister.MagicValue: return VirtioMmioRegister.Magic;
            case VirtioMmioRegister.Version: return VirtioMmioRegister.ModernVersion;
            case VirtioMmioRegister.DeviceId: return (uint)_device.DeviceType;
            case VirtioMmioRegister.VendorId: return VirtioMmioRegister.FireSharpVendorId;
            case VirtioMmioRegister.DeviceFeatures:
                uint sel = Volatile.Read(ref _deviceFeaturesSel);
                return sel < 2 ? (uint)(OfferedFeatures >> (int)(32 * sel)) : 0;
            case VirtioMmioRegister.InterruptStatus: return InterruptStatus;
            case VirtioMmioRegister.Status: return Status;
            case VirtioMmioRegister.ConfigGeneration: return ConfigGeneration;
            case VirtioMmioRegister.ShmLenLow or VirtioMmioRegister.ShmLenHigh or
                 VirtioMmioRegister.ShmBaseLow or VirtioMmioRegister.ShmBaseHigh:
                return uint.MaxValue; // no shared memory regions: a length of -1 says "no such region"
        }
        lock (_gate)
        {
            var q = _queueSel < _queues.Length ? _queues[_queueSel] : null;
            return offset switch
            {
                VirtioMmioRegister.QueueNumMax => q?.MaxSize ?? 0u,
                VirtioMmioRegister.QueueNum => q?.Size ?? 0u,
                VirtioMmioRegister.QueueReady => q is { Ready: true } ? 1u : 0u,
                VirtioMmioRegister.QueueDescLow => (uint)(q?.DescTable ?? 0),
                VirtioMmioRegister.QueueDescHigh => (uint)((q?.DescTable ?? 0) >> 32),
                VirtioMmioRegister.QueueDriverLow => (uint)(q?.AvailRing ?? 0),
                VirtioMmioRegister.QueueDriverHigh => (uint)((q?.AvailRing ?? 0) >> 32),
                VirtioMmioRegister.QueueDeviceLow => (uint)(q?.UsedRing ?? 0),
                VirtioMmioRegister.QueueDeviceHigh => (uint)((q?.UsedRing ?? 0) >> 32),
                _ => 0,
            };
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset >= VirtioMmioRegister.Config)
        {
            lock (_gate) _device.WriteConfig((uint)(offset - VirtioMmioRegister.Config), data);
            return;
        }
        if (data.Length != 4 || offset % 4 != 0) return;
        uint value = BinaryPrimitives.ReadUInt32LittleEndian(data);
        switch ((uint)offset)
        {
            case VirtioMmioRegister.QueueNotify:
                Notify(value);
                return;
            case VirtioMmioRegister.InterruptAck:
                Interlocked.And(ref _interruptStatus, ~(int)value);
                return;
        }
        bool kick;
        lock (_gate) kick = WriteRegisterLocked((uint)offset, value);
        if (kick)
        {
            // DRIVER_OK: buffers made available before it are processed now.
            for (int i = 0; i < _queues.Length; i++) Notify((uint)i);
        }
    }

    /// <summary>Returns true when the device just became live (DRIVER_OK).</summary>
    private bool WriteRegisterLocked(uint offset, uint value)
    {
        switch (offset)
        {
            case VirtioMmioRegister.DeviceFeaturesSel: Volatile.Write(ref _deviceFeaturesSel, value); break;
            case VirtioMmioRegister.DriverFeaturesSel: _driverFeaturesSel = value; break;
            case VirtioMmioRegister.DriverFeatures:
                if ((_status & VirtioStatus.FeaturesOk) == 0 && _driverFeaturesSel < 2)
                {
                    int shift = (int)(32 * _driverFeaturesSel);
                    _driverFeatures = (_driverFeatures & ~(0xffff_ffffUL << shift)) | ((ulong)value << shift);
                }
                break;
            case VirtioMmioRegister.QueueSel: _queueSel = value; break;
            case VirtioMmioRegister.ShmSel: _shmSel = value; break;
            case VirtioMmioRegister.Status: return WriteStatusLocked(value);
            case VirtioMmioRegister.QueueReady: WriteQueueReadyLocked(value); break;
            case VirtioMmioRegister.QueueNum or
                 VirtioMmioRegister.QueueDescLow or VirtioMmioRegister.QueueDescHigh or
                 VirtioMmioRegister.QueueDriverLow or VirtioMmioRegister.QueueDriverHigh or
                 VirtioMmioRegister.QueueDeviceLow or VirtioMmioRegister.QueueDeviceHigh:
                // The layout of a live queue cannot change under the device.
                if (_queueSel >= _queues.Length || _queues[_queueSel].Ready) break;
                var q = _queues[_queueSel];
                switch (offset)
                {
                    case VirtioMmioRegister.QueueNum: q.Size = (ushort)Math.Min(value, ushort.MaxValue); break;
                    case VirtioMmioRegister.QueueDescLow: q.DescTable = SetLow(q.DescTable, value); break;
                    case VirtioMmioRegister.QueueDescHigh: q.DescTable = SetHigh(q.DescTable, value); break;
                    case VirtioMmioRegister.QueueDriverLow: q.AvailRing = SetLow(q.AvailRing, value); break;
                    case VirtioMmioRegister.QueueDriverHigh: q.AvailRing = SetHigh(q.AvailRing, value); break;
                    case VirtioMmioRegister.QueueDeviceLow: q.UsedRing = SetLow(q.UsedRing, value); break;
                    case VirtioMmioRegister.QueueDeviceHigh: q.UsedRing = SetHigh(q.UsedRing, value); break;
                }
                break;
        }
        return false;
    }

    private static ulong SetLow(ulong old, uint value) => (old & 0xffff_ffff_0000_0000UL) | value;
    private static ulong SetHigh(ulong old, uint value) => (old & 0xffff_ffffUL) | ((ulong)value << 32);

    private void WriteQueueReadyLocked(uint value)
    {
        if (_queueSel >= _queues.Length) return;
        var q = _queues[_queueSel];
        if (value == 0)
        {
            if (q.Ready) _layoutEpoch++;
            q.Ready = false;
            return;
        }
        if (q.Ready) return;
        _layoutEpoch++;
        q.EventIdx = (_driverFeatures & VirtioFeatures.EventIdx) != 0;
        q.IndirectDesc = (_driverFeatures & VirtioFeatures.IndirectDesc) != 0;
        q.Ready = true;
        if (!q.ValidateLayout(Memory))
            EnterNeedsResetLocked($"queue {_queueSel}: {q.BrokenReason}");
    }

    private bool WriteStatusLocked(uint value)
    {
        if (value == 0)
        {
            ResetLocked();
            return false;
        }
        uint old = _status;
        // DEVICE_NEEDS_RESET belongs to the device: only a reset clears it.
        uint next = (value & ~VirtioStatus.DeviceNeedsReset) | (old & VirtioStatus.DeviceNeedsReset);
        if ((next & VirtioStatus.FeaturesOk) != 0 && (old & VirtioStatus.FeaturesOk) == 0)
        {
            if (CheckFeatures(_driverFeatures) is { } problem)
            {
                VirtioLog.FeaturesRefused(_logger, _device.Id, problem);
                next &= ~VirtioStatus.FeaturesOk; // the driver reads Status back and sees the refusal
            }
        }
        bool activating = (next & VirtioStatus.DriverOk) != 0 && (old & VirtioStatus.DriverOk) == 0;
        if (activating && (next & VirtioStatus.FeaturesOk) == 0)
        {
            next &= ~VirtioStatus.DriverOk;
            activating = false;
        }
        Volatile.Write(ref _status, next);
        if (!activating) return false;

        foreach (var q in _queues)
        {
            q.EventIdx = (_driverFeatures & VirtioFeatures.EventIdx) != 0;
            q.IndirectDesc = (_driverFeatures & VirtioFeatures.IndirectDesc) != 0;
        }
        _device.Activate(_driverFeatures);
        VirtioLog.DriverOk(_logger, _device.Id, _driverFeatures);
        if ((next & VirtioStatus.DeviceNeedsReset) != 0) RaiseInterrupt(VirtioInterrupt.ConfigChange);
        return true;
    }

    /// <summary>Why the driver's feature set cannot be accepted, or null.</summary>
    private string? CheckFeatures(ulong features)
    {
        ulong unknown = features & ~OfferedFeatures;
        if (unknown != 0) return $"the driver accepted features the device did not offer (0x{unknown:x})";
        if ((features & VirtioFeatures.Version1) == 0) return "the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)";
        return null;
    }

    private void ResetLocked()
    {
        _layoutEpoch++;
        Volatile.Write(ref _status, 0);
        _driverFeatures = 0;
        _deviceFeaturesSel = _driverFeaturesSel = _queueSel = _shmSel = 0;
        foreach (var q in _queues) q.Reset();
        Interlocked.Exchange(ref _interruptStatus, 0);
        _device.Reset();
        VirtioLog.Reset(_logger, _device.Id);
    }

    private void Notify(uint queue)
    {
        if (queue >= _queues.Length) return;
        if (QueueNotifyHandler is { } handler) handler((int)queue);
        else ProcessQueue((int)queue);
    }

    /// <summary>
    /// Asks for queue <paramref name="index"/> to be run as a driver notification would (through
    /// <see cref="QueueNotifyHandler"/>, so on the device's thread): for a device that deferred a request.
    /// </summary>
    public void RequestRun(int index)
    {
        if (index >= 0) Notify((uint)index);
    }

    /// <summary>
    /// Processes queue <paramref name="index"/> until it is empty (or the device stops), then interrupts the
    /// driver if it wants that. Safe to call from any thread at any time: a call that finds another thread
    /// processing the same queue leaves a note for it and returns at once.
    /// </summary>
    public void ProcessQueue(int index)
    {
        if ((uint)index >= (uint)_queues.Length) return;
        var run = _runs[index];
        Volatile.Write(ref run.Pending, 1);
        // While quiesced the note stays; Unquiesce runs every queue again.
        while (Volatile.Read(ref _quiesced) == 0 && Monitor.TryEnter(run))
        {
            try
            {
                while (Volatile.Read(ref _quiesced) == 0 && Interlocked.Exchange(ref run.Pending, 0) == 1) RunQueue(_contexts[index]);
            }
            finally
            {
                Monitor.Exit(run);
            }
            // A notification that arrived after our last check but before Exit found the monitor taken.
            if (Volatile.Read(ref run.Pending) == 0) return;
        }
    }

    private void RunQueue(VirtqueueContext ctx)
    {
        try
        {
            _device.ProcessQueue(ctx);
        }
        catch (Exception e)
        {
            ctx.Abandon();
            VirtioLog.DeviceFault(_logger, e, _device.Id, ctx.Index);
            lock (_gate) EnterNeedsResetLocked($"device error on queue {ctx.Index}: {e.Message}");
            return;
        }
        lock (_gate)
        {
            if (ctx.Queue.NeedsInterrupt(Memory) && (_status & VirtioStatus.DriverOk) != 0)
                RaiseInterrupt(VirtioInterrupt.UsedBuffer);
        }
    }

    /// <summary>
    /// Stops request processing, for a snapshot: returns once no request is in flight and no queue run
    /// (with its interrupt) is under way. A run in progress finishes its current request, raises the
    /// interrupt it owes, and stops; notifications that arrive meanwhile are remembered, not lost. Guest
    /// memory, the rings and <see cref="SaveState"/> then stay still until <see cref="Unquiesce"/>.
    /// Register accesses are not blocked (the vCPUs are expected to be paused).
    /// </summary>
    public void Quiesce()
    {
        Volatile.Write(ref _quiesced, 1);
        // Each queue run holds its run lock from its first request to its interrupt: taking it once
        // waits for the run in flight, and any later run sees the flag before it starts.
        foreach (var run in _runs)
        {
            lock (run) { }
        }
    }

    /// <summary>Lets requests run again and processes every queue once (requests made available while quiesced,
    /// or before a snapshot was taken and restored).</summary>
    public void Unquiesce()
    {
        Volatile.Write(ref _quiesced, 0);
        for (int i = 0; i < _queues.Length; i++) Notify((uint)i);
    }

    public bool IsQuiesced => Volatile.Read(ref _quiesced) != 0;

    /// <summary>
    /// After a restore, once the VM's interrupt controller state is in place: raises the interrupt again if
    /// the saved InterruptStatus has bits the driver has not acknowledged. The edge may have been on its way
    /// into KVM (irqfd injects asynchronously) when the snapshot was taken; a repeated one is harmless, the
    /// driver reads the status and handles it once. Requests the driver made available before the snapshot
    /// are taken by the run that <see cref="Unquiesce"/> starts.
    /// </summary>
    public void RaisePendingInterrupt()
    {
        bool raise;
        lock (_gate) raise = InterruptStatus != 0 && (_status & VirtioStatus.DriverOk) != 0;
        if (raise) _interrupt.Pulse();
    }

    /// <summary>Whether requests on <paramref name="queue"/> may run now. Called with <see cref="Gate"/> held.</summary>
    internal bool CanProcess(Virtqueue queue)
    {
        uint s = _status;
        return Volatile.Read(ref _quiesced) == 0
            && (s & VirtioStatus.DriverOk) != 0
            && (s & (VirtioStatus.DeviceNeedsReset | VirtioStatus.Failed)) == 0
            && queue.Ready && !queue.IsBroken;
    }

    /// <summary>
    /// The device's event loop died outside queue processing (epoll, a tap or socket, a device bug): the device
    /// enters DEVICE_NEEDS_RESET so the driver learns it, instead of the device going silently dead.
    /// </summary>
    internal void OnEventLoopFailed(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        lock (_gate) EnterNeedsResetLocked($"event loop failed: {e.GetType().Name}: {e.Message}");
    }

    internal void OnQueueBroken(VirtqueueContext ctx) =>
        EnterNeedsResetLocked($"queue {ctx.Index}: {ctx.Queue.BrokenReason}");

    private void EnterNeedsResetLocked(string reason)
    {
        uint s = _status;
        if ((s & VirtioStatus.DeviceNeedsReset) != 0) return;
        Volatile.Write(ref _status, s | VirtioStatus.DeviceNeedsReset);
        // Logged once per device: a guest that breaks and resets in a loop must not flood the host log.
        if (++_needsResetCount == 1) VirtioLog.NeedsReset(_logger, _device.Id, reason);
        if ((s & VirtioStatus.DriverOk) != 0) RaiseInterrupt(VirtioInterrupt.ConfigChange);
    }

    /// <summary>How many times the device entered DEVICE_NEEDS_RESET (only the first is logged).</summary>
    public int NeedsResetCount { get { lock (_gate) return _needsResetCount; } }

    /// <summary>The device's config space changed (e.g. a resized disk): bump the generation and tell the driver.</summary>
    public void NotifyConfigChanged()
    {
        lock (_gate)
        {
            _configGeneration++;
            if ((_status & VirtioStatus.DriverOk) != 0) RaiseInterrupt(VirtioInterrupt.ConfigChange);
        }
    }

    private void RaiseInterrupt(uint reason)
    {
        Interlocked.Or(ref _interruptStatus, (int)reason);
        // Pulse even if the bit was already set: Linux acknowledges before it looks at the rings, so an
        // edge here is what makes it look again.
        _interrupt.Pulse();
    }

    public byte[] SaveState()
    {
        lock (_gate)
        {
            using var ms = new MemoryStream();
            using (var w = new BinaryWriter(ms))
            {
                w.Write(StateFormat);
                w.Write((uint)_device.DeviceType);
                w.Write(_queues.Length);
                w.Write(_status);
                w.Write(_driverFeatures);
                w.Write(_deviceFeaturesSel);
                w.Write(_driverFeaturesSel);
                w.Write(_queueSel);
                w.Write(_shmSel);
                w.Write((uint)_interruptStatus);
                w.Write(_configGeneration);
                foreach (var q in _queues) q.Save(w);
                var device = _device.SaveState();
                w.Write(device.Length);
                w.Write(device);
            }
            return ms.ToArray();
        }
    }

    public void RestoreState(ReadOnlySpan<byte> state)
    {
        Virtqueue.QueueState[] queues;
        uint status, deviceSel, driverSel, queueSel, shmSel, interrupts, generation;
        ulong features;
        byte[] device;
        try
        {
            using var r = new BinaryReader(new MemoryStream(state.ToArray()));
            if (r.ReadByte() != StateFormat) throw new InvalidDataException("unknown virtio-mmio state format");
            if (r.ReadUInt32() != (uint)_device.DeviceType) throw new InvalidDataException("virtio-mmio state is for another device type");
            if (r.ReadInt32() != _queues.Length) throw new InvalidDataException("virtio-mmio state has a different number of queues");
            status = r.ReadUInt32();
            features = r.ReadUInt64();
            deviceSel = r.ReadUInt32();
            driverSel = r.ReadUInt32();
            queueSel = r.ReadUInt32();
            shmSel = r.ReadUInt32();
            interrupts = r.ReadUInt32();
            generation = r.ReadUInt32();
            queues = new Virtqueue.QueueState[_queues.Length];
            for (int i = 0; i < queues.Length; i++) queues[i] = Virtqueue.Load(r, _device.MaxQueueSize);
            int length = r.ReadInt32();
            if (length < 0 || length > r.BaseStream.Length - r.BaseStream.Position)
                throw new InvalidDataException("virtio-mmio state: bad device state length");
            device = r.ReadBytes(length);
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException("virtio-mmio state has trailing bytes");
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("virtio-mmio state is truncated", e);
        }
        if ((features & ~OfferedFeatures) != 0) throw new InvalidDataException("virtio-mmio state has features this device does not offer");
        if ((interrupts & ~(VirtioInterrupt.UsedBuffer | VirtioInterrupt.ConfigChange)) != 0)
            throw new InvalidDataException("virtio-mmio state has unknown interrupt bits");

        lock (_gate)
        {
            _device.RestoreState(device); // validates and throws before anything here changes
            _layoutEpoch++;
            _status = status;
            _driverFeatures = features;
            _deviceFeaturesSel = deviceSel;
            _driverFeaturesSel = driverSel;
            _queueSel = queueSel;
            _shmSel = shmSel;
            Interlocked.Exchange(ref _interruptStatus, (int)interrupts);
            _configGeneration = generation;
            for (int i = 0; i < queues.Length; i++) _queues[i].Apply(queues[i]);
            if ((status & VirtioStatus.DriverOk) != 0) _device.Activate(features);
        }
    }

    /// <summary>Per-queue "someone asked for a run" flag; the object itself is the run lock.</summary>
    private sealed class QueueRun
    {
        public int Pending;
    }
}
