using System.Diagnostics;
using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;
using FireSharp.Snapshot;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Vm;

/// <summary>Everything needed to build a runnable microVM.</summary>
public sealed partial record VmSpec
{
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }

    /// <summary>Kernel command line; null = <see cref="MicroVm.DefaultLinuxCmdline"/> for Linux, empty otherwise.</summary>
    public string? Cmdline { get; init; }

    public ulong MemoryMib { get; init; } = 128;
    public int Vcpus { get; init; } = 1;
    public ISerialSink Serial { get; init; } = NullSerialSink.Instance;

    /// <summary>Apply PVM workarounds; null = detect.</summary>
    public bool? Pvm { get; init; }

    /// <summary>For an ELF with both entries, enter through PVH rather than the 64-bit boot protocol.</summary>
    public bool PreferPvh { get; init; }

    /// <summary>
    /// virtio-blk drives, in virtio-mmio slot order (0xC0001000, GSI 5, then the next): /dev/vda, /dev/vdb, ...
    /// for Linux. The one with <see cref="DriveSpec.IsRoot"/> adds <c>root=/dev/vdX rw</c> (or <c>ro</c>).
    /// </summary>
    public IReadOnlyList<DriveSpec> Drives { get; init; } = [];

    /// <summary>
    /// A virtio-vsock device (guest CID and the hybrid host Unix socket FireSharp creates), in the virtio-mmio
    /// slot after the drives; null = none.
    /// </summary>
    public VsockDeviceSpec? Vsock { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>
/// A machine with FireSharp's standard devices (COM1, i8042, boot timer) and a loaded kernel, ready to
/// start. This is the unit the CLI, the tests and (later) the per-VM worker process drive.
/// </summary>
public sealed partial class MicroVm : IDisposable
{
    /// <summary>Console on COM1, reboot through the i8042, no PCI or modules; as Firecracker's default.</summary>
    public const string DefaultLinuxCmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet";

    private readonly BootPlan? _plan;

    private MicroVm(VirtualMachine machine, StandardDevices devices, VirtioDeviceSet virtio, BootPlan? plan, string kernelPath, long started,
        VirtioVsock? vsock = null, (VmSpec Spec, List<VirtioNet> Nics)? net = null)
    {
        Machine = machine;
        Serial = devices.Serial;
        Keyboard = devices.Keyboard;
        BootTimer = devices.BootTimer;
        Virtio = virtio;
        var stateful = new List<(DeviceDescriptor, IStatefulDevice)>(devices.Stateful);
        // A drive's state is its transport's (which carries the VirtioBlock's own state inside).
        for (int i = 0; i < virtio.Transports.Count; i++)
            stateful.Add((DriveSettings.Describe(virtio.Drives, i, virtio.DriveSizeBytes(i)), virtio.Transports[i]));
        // The vsock's state is its transport's too (queues; the device adds its CID and resets connections on restore).
        if (vsock?.Transport is { } vsockTransport)
            stateful.Add((VsockSettings.Describe(new VsockDeviceSpec(vsock.GuestCid, vsock.UdsPath), vsock.Slot), vsockTransport));
        Vsock = vsock;
        if (net is { } n)
        {
            stateful.AddRange(NicStateful(n.Spec, n.Nics));
            Nics = n.Nics;
        }
        StatefulDevices = stateful;
        _plan = plan;
        KernelPath = kernelPath;
        StartTimestamp = started;
    }

    public VirtualMachine Machine { get; }
    public Serial16550 Serial { get; }
    public I8042 Keyboard { get; }
    public BootTimer BootTimer { get; }

    /// <summary>How the kernel was loaded. A VM restored from a snapshot has none (see <see cref="IsRestored"/>).</summary>
    public BootPlan Plan => _plan ?? throw new InvalidOperationException("a VM restored from a snapshot has no boot plan");

    /// <summary>True for a VM built by <see cref="Restore"/>.</summary>
    public bool IsRestored => _plan is null;

    /// <summary>The kernel this VM booted (for a restored VM: the one its snapshot's VM booted).</summary>
    public string KernelPath { get; }

    /// <summary>Every device whose state goes into snapshots, with what a restore needs to rebuild it.</summary>
    public IReadOnlyList<(DeviceDescriptor Descriptor, IStatefulDevice Device)> StatefulDevices { get; }

    /// <summary><see cref="Stopwatch"/> timestamp taken when creation began (boot-done is measured from it).</summary>
    public long StartTimestamp { get; }

    public Task<VmExit> Exited => Machine.Exited;

    /// <summary>Builds the VM, its devices and the boot state. Nothing runs until <see cref="Start"/>.</summary>
    public static MicroVm Create(VmSpec spec, long? startTimestamp = null)
    {
        long started = startTimestamp ?? Stopwatch.GetTimestamp();
        if (spec.MemoryMib == 0 || spec.MemoryMib > MachineOptions.MaxMemoryBytes / MemoryLayout.MiB)
            throw new MachineConfigException(MachineConfigError.MemorySizeOutOfRange, $"memory size {spec.MemoryMib} MiB is outside 1 MiB..{MachineOptions.MaxMemoryBytes / MemoryLayout.GiB} GiB");
        // Fail on a missing kernel before creating anything.
        if (!File.Exists(spec.KernelPath))
            throw new BootException(BootErrorReason.FileNotFound, $"kernel file not found: {spec.KernelPath}") { File = BootFile.Kernel };

        // Bad drive input (missing image, a path twice, too many devices, ...) fails here, before KVM is touched.
        spec.Vsock?.Validate();
        var openedNics = OpenNics(spec);
        VirtioDeviceSet virtio;
        try
        {
            virtio = VirtioDeviceSet.OpenDrives(spec.Drives, spec.Logger);
        }
        catch
        {
            foreach (var o in openedNics) o.Tap.Dispose();
            throw;
        }
        VirtualMachine machine;
        VirtioVsock? vsock = null;
        List<VirtioNet>? nics = null;
        try
        {
            machine = VirtualMachine.Create(new MachineOptions
            {
                MemoryBytes = spec.MemoryMib * MemoryLayout.MiB,
                VcpuCount = spec.Vcpus,
                Pvm = spec.Pvm,
                Logger = spec.Logger,
            });
        }
        catch
        {
            virtio.Dispose();
            foreach (var o in openedNics) o.Tap.Dispose();
            throw;
        }
        try
        {
            var devices = AttachDevices(machine, spec, started);
            virtio.Attach(VirtioHostFor(machine, spec.Logger));
            if (spec.Vsock is { } vsockSpec)
            {
                vsock = new VirtioVsock(vsockSpec, spec.Logger);
                vsock.AttachToVm(VirtioHostFor(machine, spec.Logger), slot: virtio.Count);
            }
            nics = AttachNics(machine, spec, openedNics, quiesced: false);

            var plan = BootLoader.Prepare(machine.Memory, new BootRequest
            {
                KernelPath = spec.KernelPath,
                InitrdPath = spec.InitrdPath,
                Cmdline = spec.Cmdline ?? "",
                VcpuCount = spec.Vcpus,
                PreferPvh = spec.PreferPvh,
            });
            if (plan.Kernel.IsLinux)
            {
                if (spec.Drives.Count > 0 || vsock is not null || nics.Count > 0) CheckVirtioMmioCmdlineSupport(spec.KernelPath, plan.Kernel, spec.Logger);
                string cmdline = (spec.Cmdline ?? DefaultLinuxCmdline) + virtio.LinuxCmdline();
                if (vsock is not null) cmdline += " " + VirtioMmioLayout.CmdlineParameter(vsock.Slot);
                cmdline += NicCmdline(spec, nics);
                if (machine.IsPvm)
                {
                    foreach (var (p, why) in PvmQuirks.LinuxParameters)
                    {
                        spec.Logger.LogInformation("PVM workaround: kernel parameter {Parameter} ({Why})", p, why);
                        cmdline += " " + p;
                    }
                }
                Cmdline.Write(machine.Memory, plan.CmdlineGpa, cmdline, plan.Kernel.MaxCmdlineBytes);
            }

            var bsp = machine.Vcpus[0];
            if (plan.Mode == BootEntryMode.Linux64)
                CpuSetup.SetupLinux64(bsp, machine.Memory, plan.EntryRip, plan.BootInfoGpa);
            else
                CpuSetup.SetupPvh(bsp, machine.Memory, plan.EntryRip, plan.BootInfoGpa);
            spec.Logger.LogDebug("kernel {Kernel}: {Format}, entry {Mode} at 0x{Rip:x}", spec.KernelPath, plan.Kernel.Format, plan.Mode, plan.EntryRip);
            return new MicroVm(machine, devices, virtio, plan, spec.KernelPath, started, vsock, (spec, nics));
        }
        catch
        {
            if (nics is not null) foreach (var nic in nics) nic.Dispose();
            else foreach (var o in openedNics) o.Tap.Dispose();
            vsock?.Dispose();
            virtio.Dispose();
            machine.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Restores a VM from a snapshot directory (see <see cref="SnapshotRestore.Restore"/>): validated
    /// first, so a bad snapshot creates no VM; memory mapped copy-on-write from the snapshot's file.
    /// </summary>
    public static MicroVm Restore(string directory, RestoreOverrides overrides) => SnapshotRestore.Restore(directory, overrides);

    /// <summary>
    /// The devices <see cref="Create"/> (and a restore) builds for <paramref name="spec"/>, in order:
    /// what a snapshot's device set must equal to be restorable by this build.
    /// </summary>
    public static IReadOnlyList<DeviceDescriptor> PlannedDevices(VmSpec spec) =>
    [
        new DeviceDescriptor("com1", "serial16550"),
        new DeviceDescriptor("i8042", "i8042"),
        new DeviceDescriptor("boot-timer", "boot-timer"),
        // Drives in slot order; their image sizes are known only once opened (StatefulDevices has them).
        .. spec.Drives.Select((_, i) => DriveSettings.Describe(spec.Drives, i, sizeBytes: null)),
        // The vsock takes the slot after the other virtio devices (as in Create).
        .. spec.Vsock is { } vsock ? [VsockSettings.Describe(vsock, VsockSlot(spec))] : Array.Empty<DeviceDescriptor>(),
        // Network interfaces after the vsock (NicSlot).
        .. PlannedNics(spec),
    ];

    /// <summary>The vsock's slot as planned (only ids and kinds of planned devices are compared; the restore checks the built slot).</summary>
    private static int VsockSlot(VmSpec spec) => spec.Drives.Count;

    /// <summary>For snapshot restore: the machine over restored memory with the same devices; no kernel is loaded.</summary>
    /// <remarks>
    /// The drives of <see cref="VmSpec.Drives"/> are opened and attached with new ioeventfds and irqfds, and
    /// start quiesced: the restore sets their state, then the VM's, then lets them run
    /// (<see cref="VirtioDeviceSet.RaisePendingInterrupts"/>, <see cref="VirtioDeviceSet.Unquiesce"/>).
    /// </remarks>
    internal static MicroVm CreateRestored(VmSpec spec, GuestMemory memory, IReadOnlyList<kvm_cpuid_entry2[]> cpuid, long started)
    {
        VirtioDeviceSet virtio;
        try
        {
            spec.Vsock?.Validate();
            virtio = VirtioDeviceSet.OpenDrives(spec.Drives, spec.Logger);
        }
        catch
        {
            memory.Dispose();
            throw;
        }
        VirtualMachine machine;
        try
        {
            machine = VirtualMachine.CreateRestored(new MachineOptions
            {
                MemoryBytes = spec.MemoryMib * MemoryLayout.MiB,
                VcpuCount = spec.Vcpus,
                Pvm = spec.Pvm,
                Logger = spec.Logger,
            }, memory, cpuid);
        }
        catch
        {
            virtio.Dispose();
            throw;
        }
        VirtioVsock? vsock = null;
        List<VirtioNet>? nics = null;
        try
        {
            var devices = AttachDevices(machine, spec, started);
            virtio.Attach(VirtioHostFor(machine, spec.Logger), quiesced: true);
            if (spec.Vsock is { } vsockSpec)
            {
                // A new host socket (the clone's own path); quiesced until the restore has set its queues.
                vsock = new VirtioVsock(vsockSpec, spec.Logger);
                vsock.AttachToVm(VirtioHostFor(machine, spec.Logger), slot: virtio.Count, quiesced: true);
            }
            // This clone's taps (TapNames overrides, or the recorded ones); quiesced until their queues are set.
            nics = AttachNics(machine, spec, OpenNics(spec), quiesced: true);
            return new MicroVm(machine, devices, virtio, plan: null, spec.KernelPath, started, vsock, (spec, nics));
        }
        catch
        {
            if (nics is not null) foreach (var nic in nics) nic.Dispose();
            vsock?.Dispose();
            virtio.Dispose();
            machine.Dispose();
            throw;
        }
    }

    private sealed record StandardDevices(Serial16550 Serial, I8042 Keyboard, BootTimer BootTimer,
        IReadOnlyList<(DeviceDescriptor Descriptor, IStatefulDevice Device)> Stateful);

    /// <summary>The devices of every microVM, fresh or restored; keep in step with <see cref="PlannedDevices"/>.</summary>
    private static StandardDevices AttachDevices(VirtualMachine machine, VmSpec spec, long started)
    {
        var console = new PowerDownWatcher(spec.Serial, machine.RequestExit);
        var serial = new Serial16550(console, machine.InterruptLine(Serial16550.Com1Irq));
        machine.PortBus.Register(Serial16550.Com1Port, Serial16550.PortCount, serial, "COM1 (16550)");
        var keyboard = new I8042(() => machine.RequestExit(new VmExit(VmExitKind.Reset, "guest reset through the i8042 controller")),
            machine.InterruptLine(I8042.KeyboardIrq));
        machine.PortBus.Register(I8042.BasePort, I8042.PortCount, keyboard, "i8042");
        var bootTimer = new BootTimer(started, t => spec.Logger.LogInformation("guest boot done after {Ms:F1} ms", t.TotalMilliseconds));
        machine.MmioBus.Register(BootTimer.Address, BootTimer.Length, bootTimer, "boot timer");

        var planned = PlannedDevices(spec);
        IStatefulDevice[] built = [serial, keyboard, bootTimer];
        var stateful = new List<(DeviceDescriptor, IStatefulDevice)>(built.Length);
        for (int i = 0; i < built.Length; i++) stateful.Add((planned[i], built[i]));
        return new StandardDevices(serial, keyboard, bootTimer, stateful);
    }

    /// <summary>
    /// Devices are announced with virtio_mmio.device= on the command line, which a kernel without
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES silently ignores (the guest would then boot without its disks).
    /// An ELF vmlinux with that option carries the parameter name "virtio_mmio.device" in its
    /// read-only data, so its absence is a clear error. A bzImage's payload is compressed and cannot be
    /// checked this way; that is logged.
    /// </summary>
    private static void CheckVirtioMmioCmdlineSupport(string kernelPath, KernelImage kernel, ILogger logger)
    {
        if (kernel.Format != KernelFormat.Elf)
        {
            logger.LogDebug("cannot check a compressed kernel for virtio-mmio command-line device support");
            return;
        }
        ReadOnlySpan<byte> marker = "virtio_mmio.device\0"u8;
        using var stream = File.OpenRead(kernelPath);
        var buffer = new byte[1 << 20];
        int carry = 0;
        while (true)
        {
            int n = stream.Read(buffer, carry, buffer.Length - carry);
            if (n == 0) break;
            int length = carry + n;
            if (buffer.AsSpan(0, length).IndexOf(marker) >= 0) return;
            carry = Math.Min(marker.Length - 1, length);
            buffer.AsSpan(length - carry, carry).CopyTo(buffer);
        }
        throw new BootException(BootErrorReason.KernelLacksVirtioMmioCmdline,
            $"{kernelPath}: drives were given, but this kernel was built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it would ignore virtio_mmio.device= and boot without them");
    }

    public void Start() => Machine.Start();

    /// <summary>Pauses the vCPUs, then quiesces the virtio devices (no request in flight until <see cref="Resume"/>).</summary>
    public bool Pause(TimeSpan timeout)
    {
        if (!Machine.Pause(timeout)) return false;
        Virtio.Quiesce();
        Vsock?.Transport?.Quiesce();
        QuiesceNics();
        return true;
    }

    /// <summary>Lets the virtio devices run again, then resumes the vCPUs.</summary>
    public void Resume()
    {
        Virtio.Unquiesce();
        Vsock?.Transport?.Unquiesce();
        UnquiesceNics();
        Machine.Resume();
    }

    public VmExit Stop(TimeSpan? timeout = null) => Machine.Stop(timeout);

    /// <summary>The virtio devices (drives) of this VM, fresh or restored; empty without drives.</summary>
    public VirtioDeviceSet Virtio { get; }

    /// <summary>What virtio devices get from the machine: its memory, MMIO bus, irqfd and ioeventfd.</summary>
    private static VirtioHost VirtioHostFor(VirtualMachine machine, ILogger logger) => new()
    {
        Memory = machine.Memory,
        RegisterMmio = machine.MmioBus.Register,
        InterruptLine = machine.InterruptLine,
        AssignIoeventfd = (fd, address, value) => machine.Kvm.AssignIoeventfd(fd, address, 4, value),
        // irqfd injects into the in-kernel irqchip; without one there is nothing to inject into.
        AssignIrqfd = machine.Options.InKernelIrqchip ? (fd, gsi) => machine.Kvm.AssignIrqfd(fd, gsi) : null,
        Logger = logger,
    };

    public void Dispose()
    {
        if (Virtio is { Count: > 0 } virtio)
        {
            // Device threads use guest memory: stop the vCPUs, then the devices, and only then unmap it.
            try
            {
                if (Machine.State is VmState.Running or VmState.Paused) Machine.Stop();
            }
            catch (TimeoutException) { }
            virtio.Dispose();
        }
        if (Vsock is { } vsock)
        {
            // Its event loop writes guest memory too: after the vCPUs, before the memory goes.
            try
            {
                if (Machine.State is VmState.Running or VmState.Paused) Machine.Stop();
            }
            catch (TimeoutException) { }
            vsock.Dispose();
        }
        DisposeNics();
        Machine.Dispose();
    }

    /// <summary>The vsock device of a VM built (or restored) with <see cref="VmSpec.Vsock"/>; null otherwise.</summary>
    public VirtioVsock? Vsock { get; }
}
