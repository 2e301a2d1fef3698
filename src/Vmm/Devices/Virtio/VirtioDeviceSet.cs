using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// What a VM offers its virtio devices, as plain delegates so that this folder does not depend on the VM
/// classes: guest memory, MMIO registration, and (where KVM has them) ioeventfd and irqfd.
/// </summary>
public sealed record VirtioHost
{
    public required GuestMemory Memory { get; init; }

    /// <summary>Registers an MMIO window (address, length, device, name).</summary>
    public required Action<ulong, ulong, IBusDevice, string> RegisterMmio { get; init; }

    /// <summary>An interrupt line driven with KVM_IRQ_LINE, the fallback when irqfd is unavailable.</summary>
    public required Func<uint, IInterruptLine> InterruptLine { get; init; }

    /// <summary>KVM_IOEVENTFD: signal eventfd (fd) on a 4-byte guest write of value (datamatch) at address. Null = not available.</summary>
    public Action<int, ulong, uint>? AssignIoeventfd { get; init; }

    /// <summary>KVM_IRQFD: an edge on the GSI when eventfd (fd) is signalled. Null = not available.</summary>
    public Action<int, uint>? AssignIrqfd { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>
/// A VM's virtio devices: the block drives of a <see cref="DriveSpec"/> list, each in its own virtio-mmio slot
/// (<see cref="VirtioMmioLayout"/>, in list order) with its transport, worker thread, ioeventfd and irqfd.
/// Built in two steps so that bad input fails before any VM exists: <see cref="OpenDrives"/> validates the
/// list and opens every image, <see cref="Attach"/> wires the devices into a VM. Dispose only after the
/// vCPUs have stopped, and before guest memory is unmapped.
/// </summary>
public sealed class VirtioDeviceSet : IDisposable
{
    private readonly List<(DriveSpec Spec, IBlockBackend Backend)> _drives;
    private readonly List<VirtioBlock> _blocks = [];
    private readonly List<VirtioMmioTransport> _transports = [];
    private readonly List<VirtioWorker> _workers = [];
    private readonly List<EventFd> _irqEvents = [];
    private readonly ILogger _logger;
    private bool _attached, _disposed;

    private VirtioDeviceSet(List<(DriveSpec, IBlockBackend)> drives, ILogger logger)
    {
        _drives = drives;
        _logger = logger;
    }

    /// <summary>
    /// Validates <paramref name="drives"/> (see <see cref="DriveSpec.Validate"/>) and opens every image; throws
    /// <see cref="VirtioConfigException"/> naming the drive for anything wrong, with nothing left open.
    /// </summary>
    public static VirtioDeviceSet OpenDrives(IReadOnlyList<DriveSpec> drives, ILogger? logger = null)
    {
        DriveSpec.Validate(drives);
        var opened = new List<(DriveSpec, IBlockBackend)>(drives.Count);
        try
        {
            for (int i = 0; i < drives.Count; i++)
                opened.Add((drives[i], RawImageBackend.Open(drives[i].Path, drives[i].ReadOnly, DriveSpec.FieldName(i))));
        }
        catch
        {
            foreach (var (_, b) in opened) b.Dispose();
            throw;
        }
        return new VirtioDeviceSet(opened, logger ?? NullLogger.Instance);
    }

    public IReadOnlyList<VirtioMmioTransport> Transports => _transports;
    public IReadOnlyList<VirtioBlock> Blocks => _blocks;
    public int Count => _drives.Count;

    /// <summary>The drives as given, in slot order.</summary>
    public IReadOnlyList<DriveSpec> Drives => [.. _drives.Select(d => d.Spec)];

    /// <summary>Drive <paramref name="index"/>'s id (<see cref="DriveSpec.EffectiveId"/>).</summary>
    public string DriveId(int index) => DriveSpec.EffectiveId(Drives, index);

    /// <summary>The size of drive <paramref name="index"/>'s image, as opened.</summary>
    public ulong DriveSizeBytes(int index) => _drives[index].Backend.SizeBytes;

    /// <summary>Whether every device is quiesced (<see cref="Quiesce"/>); true without devices.</summary>
    public bool IsQuiesced => _transports.All(t => t.IsQuiesced);

    /// <summary>
    /// Stops every device's request processing and returns once no request is in flight and no worker is
    /// between a request and its interrupt (<see cref="VirtioMmioTransport.Quiesce"/>): for a snapshot, after
    /// the vCPUs have paused. Idempotent.
    /// </summary>
    public void Quiesce()
    {
        foreach (var t in _transports) t.Quiesce();
    }

    /// <summary>Undoes <see cref="Quiesce"/>: each worker takes what the queues hold.</summary>
    public void Unquiesce()
    {
        if (_disposed) return;
        foreach (var t in _transports) t.Unquiesce();
    }

    /// <summary>After a restore, once the VM's irqchip state is set: re-raises interrupts the drivers had not acknowledged.</summary>
    public void RaisePendingInterrupts()
    {
        foreach (var t in _transports) t.RaisePendingInterrupt();
    }

    /// <summary>Index of the root drive: the one marked <see cref="DriveSpec.IsRoot"/>, or -1.</summary>
    public int RootIndex => _drives.FindIndex(d => d.Spec.IsRoot);

    /// <summary>
    /// Creates the devices, registers them at their slots, wires notification and interrupts (a new
    /// ioeventfd and irqfd per device, also for a restored VM), starts the workers. With
    /// <paramref name="quiesced"/> the devices start quiesced (a restore sets their state first).
    /// </summary>
    public void Attach(VirtioHost host, bool quiesced = false)
    {
        ArgumentNullException.ThrowIfNull(host);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_attached) throw new InvalidOperationException("virtio devices are already attached");
        _attached = true;
        for (int slot = 0; slot < _drives.Count; slot++)
        {
            var (spec, backend) = _drives[slot];
            ulong address = VirtioMmioLayout.Address(slot);
            uint gsi = VirtioMmioLayout.Gsi(slot);

            var block = new VirtioBlock(backend, slot.ToString(System.Globalization.CultureInfo.InvariantCulture), spec.Serial, host.Logger);
            _blocks.Add(block);

            IInterruptLine? line = null;
            string interruptKind = "KVM_IRQ_LINE";
            if (host.AssignIrqfd is { } assignIrqfd)
            {
                var irq = EventFd.Create();
                _irqEvents.Add(irq);
                try
                {
                    assignIrqfd(irq.Fd, gsi);
                    line = new EventFdInterruptLine(irq);
                    interruptKind = "irqfd";
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    VirtioLog.FallBack(_logger, block.Id, "irqfd", e.Message);
                }
            }
            line ??= host.InterruptLine(gsi);

            var transport = new VirtioMmioTransport(block, host.Memory, line, host.Logger);
            if (quiesced) transport.Quiesce();
            var worker = new VirtioWorker(transport, host.Logger);
            _transports.Add(transport);
            _workers.Add(worker);
            // Without ioeventfd (or for a write KVM did not match) the MMIO write wakes the worker itself.
            transport.QueueNotifyHandler = worker.Notify;
            string notifyKind = "MMIO exit";
            if (host.AssignIoeventfd is { } assignIoeventfd)
            {
                try
                {
                    for (int q = 0; q < transport.Queues.Count; q++)
                        assignIoeventfd(worker.QueueEvent(q).Fd, address + VirtioMmioRegister.QueueNotify, (uint)q);
                    notifyKind = "ioeventfd";
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    VirtioLog.FallBack(_logger, block.Id, "ioeventfd", e.Message);
                }
            }
            host.RegisterMmio(address, VirtioMmioTransport.WindowSize, transport, $"virtio-blk {slot} ({spec.Path})");
            worker.Start();
            VirtioLog.Placed(_logger, block.Id, address, gsi, notifyKind, interruptKind);
        }
    }

    /// <summary>
    /// What a Linux command line needs: a <c>virtio_mmio.device=</c> per device and, with a root drive,
    /// <c>root=/dev/vdX rw</c> (or <c>ro</c>). Starts with a space; empty without devices.
    /// </summary>
    public string LinuxCmdline()
    {
        var parts = new List<string>();
        for (int slot = 0; slot < _drives.Count; slot++) parts.Add(VirtioMmioLayout.CmdlineParameter(slot));
        int root = RootIndex;
        // Linux names virtio disks vda, vdb, ... in probe order, which is command-line (slot) order.
        if (root >= 0) parts.Add($"root=/dev/vd{(char)('a' + root)} {(_drives[root].Spec.ReadOnly ? "ro" : "rw")}");
        return parts.Count == 0 ? "" : " " + string.Join(' ', parts);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var w in _workers) w.Dispose();
        foreach (var b in _blocks)
        {
            var (requests, read, written, flushes) = b.Counters;
            VirtioLog.BlockCounters(_logger, b.Id, requests, read, written, flushes);
        }
        if (_blocks.Count == _drives.Count) foreach (var b in _blocks) b.Dispose();
        else foreach (var (_, backend) in _drives) backend.Dispose();
        foreach (var e in _irqEvents) e.Dispose();
    }
}
