using System.Diagnostics;
using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Manager;
using FireSharp.Devices.RateLimiting;
using FireSharp.Kvm.Interop;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;

namespace FireSharp.Vm;

/// <summary>
/// A machine with its devices and a loaded kernel, ready to start: the unit the CLI, the tests and the per-VM
/// worker drive. Its devices (the standard ones and every device of the spec) belong to its
/// <see cref="DeviceManager"/>, <see cref="Devices"/>: this class never looks at device kinds.
/// </summary>
public sealed class MicroVm : IDisposable
{
    /// <summary>Console on COM1, reboot through the i8042, no PCI or modules; as Firecracker's default.</summary>
    public const string DefaultLinuxCmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet";

    private readonly BootPlan? _plan;

    private MicroVm(VirtualMachine machine, DeviceManager devices, BootPlan? plan, string kernelPath, long started)
    {
        Machine = machine;
        Devices = devices;
        _plan = plan;
        KernelPath = kernelPath;
        StartTimestamp = started;
    }

    public VirtualMachine Machine { get; }

    /// <summary>The one owner of this VM's devices: what they are, where they sit, their state and their lifecycle.</summary>
    public DeviceManager Devices { get; }

    public Serial16550 Serial => Devices.Serial;
    public I8042 Keyboard => Devices.Keyboard;
    public BootTimer BootTimer => Devices.BootTimer;

    /// <summary>How the kernel was loaded. A VM restored from a snapshot has none (see <see cref="IsRestored"/>).</summary>
    public BootPlan Plan => _plan ?? throw new InvalidOperationException("a VM restored from a snapshot has no boot plan");

    /// <summary>True for a VM built by <see cref="CreateRestored"/>.</summary>
    public bool IsRestored => _plan is null;

    /// <summary>The kernel this VM booted (for a restored VM: the one its snapshot's VM booted).</summary>
    public string KernelPath { get; }

    /// <summary><see cref="Stopwatch"/> timestamp taken when creation began (boot-done is measured from it).</summary>
    public long StartTimestamp { get; }

    /// <summary>Held by whoever captures the VM as a whole (a snapshot): one at a time, since one would resume the VM under another.</summary>
    public Lock CaptureLock { get; } = new();

    /// <summary>
    /// With dirty-page tracking on: the snapshot (directory, and CRC of its state file) that the next diff snapshot
    /// applies to; null until one succeeded, or when the next one must be full.
    /// </summary>
    public (string Directory, ulong StateCrc)? DiffBase { get; set; }

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

        // Bad device input (a missing image, a path twice, too many devices, a busy tap ...) fails here, before KVM is touched.
        var devices = DeviceManager.Open(spec.Devices, spec.Logger);
        VirtualMachine machine;
        try
        {
            machine = VirtualMachine.Create(OptionsFor(spec));
        }
        catch
        {
            devices.Dispose();
            throw;
        }
        try
        {
            devices.Attach(HostFor(machine, spec.Logger), HooksFor(machine, spec, started));
            var plan = BootLoader.Prepare(machine.Memory, new BootRequest
            {
                KernelPath = spec.KernelPath,
                InitrdPath = spec.InitrdPath,
                Cmdline = spec.Cmdline ?? "",
                VcpuCount = spec.Vcpus,
                PreferPvh = spec.PreferPvh,
                ScanVirtioMmioCmdline = devices.Plan.Count > 0,
            });
            if (plan.Kernel.IsLinux)
            {
                if (devices.Plan.Count > 0) CheckVirtioMmioCmdlineSupport(spec.KernelPath, plan.Kernel, spec.Logger);
                string cmdline = (spec.Cmdline ?? DefaultLinuxCmdline) + devices.KernelParameters();
                if (machine.IsPvm)
                {
                    foreach (var (p, why) in PvmQuirks.LinuxParameters)
                    {
                        VmLog.PvmKernelParameter(spec.Logger, p, why);
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
            VmLog.KernelLoaded(spec.Logger, spec.KernelPath, plan.Kernel.Format, plan.Mode, plan.EntryRip);
            return new MicroVm(machine, devices, plan, spec.KernelPath, started);
        }
        catch
        {
            devices.Dispose();
            machine.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The devices <see cref="Create"/> (and a restore) builds for <paramref name="spec"/>, in order (ids, kinds and
    /// slots): what a snapshot's device set must equal to be restorable by this build.
    /// </summary>
    public static IReadOnlyList<DeviceDescriptor> PlannedDevices(VmSpec spec) => DevicePlanner.Descriptors(spec.Devices);

    /// <summary>For snapshot restore: the machine over restored memory with the same devices; no kernel is loaded.</summary>
    /// <remarks>
    /// The devices of the spec are opened and attached with new ioeventfds and irqfds, and start quiesced: the
    /// restore sets their state, then the VM's, then lets them run (<see cref="DeviceManager.CompleteRestore"/>).
    /// Takes ownership of <paramref name="memory"/>, also on failure.
    /// </remarks>
    internal static MicroVm CreateRestored(VmSpec spec, GuestMemory memory, IReadOnlyList<kvm_cpuid_entry2[]> cpuid, long started)
    {
        DeviceManager devices;
        try
        {
            devices = DeviceManager.Open(spec.Devices, spec.Logger);
        }
        catch
        {
            memory.Dispose();
            throw;
        }
        VirtualMachine machine;
        try
        {
            machine = VirtualMachine.CreateRestored(OptionsFor(spec), memory, cpuid);
        }
        catch
        {
            devices.Dispose();
            throw;
        }
        try
        {
            devices.Attach(HostFor(machine, spec.Logger), HooksFor(machine, spec, started), quiesced: true);
            return new MicroVm(machine, devices, plan: null, spec.KernelPath, started);
        }
        catch
        {
            devices.Dispose();
            machine.Dispose();
            throw;
        }
    }

    private static MachineOptions OptionsFor(VmSpec spec) => new()
    {
        MemoryBytes = spec.MemoryMib * MemoryLayout.MiB,
        VcpuCount = spec.Vcpus,
        Pvm = spec.Pvm,
        Logger = spec.Logger,
    };

    /// <summary>What devices get from the machine: its memory, buses, interrupt lines, irqfd and ioeventfd.</summary>
    private static DeviceHost HostFor(VirtualMachine machine, ILogger logger) => new()
    {
        Memory = machine.Memory,
        RegisterMmio = machine.MmioBus.Register,
        RegisterPort = machine.PortBus.Register,
        InterruptLine = machine.InterruptLine,
        AssignIoeventfd = (fd, address, value) => machine.Kvm.AssignIoeventfd(fd, address, 4, value),
        // irqfd injects into the in-kernel irqchip; without one there is nothing to inject into.
        AssignIrqfd = machine.Options.InKernelIrqchip ? (fd, gsi) => machine.Kvm.AssignIrqfd(fd, gsi) : null,
        Logger = logger,
    };

    /// <summary>How the standard devices end the VM: a console power-off line, an i8042 reset; and the boot-done log.</summary>
    private static StandardDeviceHooks HooksFor(VirtualMachine machine, VmSpec spec, long started) => new()
    {
        Console = new PowerDownWatcher(spec.Serial, machine.RequestExit),
        GuestReset = () => machine.RequestExit(new VmExit(VmExitKind.Reset, "guest reset through the i8042 controller")),
        BootStart = started,
        BootDone = t => VmLog.BootDone(spec.Logger, t.TotalMilliseconds),
    };

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
            VmLog.CompressedKernelNotChecked(logger);
            return;
        }
        // Searched by the loader in the file it loaded (no second open by path).
        if (kernel.HasVirtioMmioCmdline != false) return;
        throw new BootException(BootErrorReason.KernelLacksVirtioMmioCmdline,
            $"{kernelPath}: drives were given, but this kernel was built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so it would ignore virtio_mmio.device= and boot without them");
    }

    public void Start() => Machine.Start();

    /// <summary>
    /// Replaces one device's rate limiter on the running (or paused) VM with fresh, full buckets of
    /// <paramref name="spec"/> (null = no limit); a request waiting for the old limiter goes again at once.
    /// <see cref="RateLimiterConfigException"/> for a bad spec or a device the VM does not have.
    /// </summary>
    public void UpdateRateLimiter(RateLimiterTarget target, string id, RateLimiterSpec? spec) =>
        UpdateRateLimiters([new RateLimiterChange(target, id, spec, "rate_limiter")]);

    /// <summary>
    /// Replaces several limiters, all or none: every change is checked (its spec, its device) before any is
    /// applied. A <see cref="RateLimiterConfigException"/>'s field starts with the failing change's
    /// <see cref="RateLimiterChange.Field"/>.
    /// </summary>
    public void UpdateRateLimiters(IReadOnlyList<RateLimiterChange> changes)
    {
        ArgumentNullException.ThrowIfNull(changes);
        var limiters = new RateLimiter[changes.Count];
        for (int i = 0; i < changes.Count; i++)
        {
            var c = changes[i];
            c.Spec?.Validate(c.Field);
            try
            {
                limiters[i] = Devices.RateLimiter(c.Target, c.DeviceId);
            }
            catch (RateLimiterConfigException e)
            {
                throw new RateLimiterConfigException(c.Field, e.Reason, e.Detail);
            }
        }
        for (int i = 0; i < changes.Count; i++) limiters[i].Update(changes[i].Spec);
    }

    /// <summary>Pauses the vCPUs, then quiesces the devices (no request in flight until <see cref="Resume"/>).</summary>
    public bool Pause(TimeSpan timeout)
    {
        if (!Machine.Pause(timeout)) return false;
        Devices.Quiesce();
        return true;
    }

    /// <summary>Lets the devices run again, then resumes the vCPUs.</summary>
    public void Resume()
    {
        Devices.Unquiesce();
        Machine.Resume();
    }

    public VmExit Stop(TimeSpan? timeout = null) => Machine.Stop(timeout);

    public void Dispose()
    {
        // Device threads use guest memory: stop the vCPUs, then the devices, and only then unmap it.
        try
        {
            if (Machine.State is VmState.Running or VmState.Paused) Machine.Stop();
        }
        catch (TimeoutException) { }
        Devices.Dispose();
        Machine.Dispose();
    }
}
