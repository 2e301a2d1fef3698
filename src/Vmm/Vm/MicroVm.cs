using System.Diagnostics;
using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Vm;

/// <summary>Everything needed to build a runnable microVM.</summary>
public sealed record VmSpec
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

    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>
/// A machine with FireSharp's standard devices (COM1, i8042, boot timer) and a loaded kernel, ready to
/// start. This is the unit the CLI, the tests and (later) the per-VM worker process drive.
/// </summary>
public sealed class MicroVm : IDisposable
{
    /// <summary>Console on COM1, reboot through the i8042, no PCI or modules; as Firecracker's default.</summary>
    public const string DefaultLinuxCmdline = "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet";

    private MicroVm(VirtualMachine machine, Serial16550 serial, I8042 keyboard, BootTimer bootTimer, BootPlan plan, long started)
    {
        Machine = machine;
        Serial = serial;
        Keyboard = keyboard;
        BootTimer = bootTimer;
        Plan = plan;
        StartTimestamp = started;
    }

    public VirtualMachine Machine { get; }
    public Serial16550 Serial { get; }
    public I8042 Keyboard { get; }
    public BootTimer BootTimer { get; }
    public BootPlan Plan { get; }

    /// <summary><see cref="Stopwatch"/> timestamp taken when creation began (boot-done is measured from it).</summary>
    public long StartTimestamp { get; }

    public Task<VmExit> Exited => Machine.Exited;

    /// <summary>Builds the VM, its devices and the boot state. Nothing runs until <see cref="Start"/>.</summary>
    public static MicroVm Create(VmSpec spec, long? startTimestamp = null)
    {
        long started = startTimestamp ?? Stopwatch.GetTimestamp();
        if (spec.MemoryMib == 0 || spec.MemoryMib > MachineOptions.MaxMemoryBytes / MemoryLayout.MiB)
            throw new MachineConfigException("mem", $"memory size {spec.MemoryMib} MiB is outside 1 MiB..{MachineOptions.MaxMemoryBytes / MemoryLayout.GiB} GiB");
        // Fail on a missing kernel before creating anything.
        if (!File.Exists(spec.KernelPath))
            throw new BootException(BootErrorReason.FileNotFound, $"kernel file not found: {spec.KernelPath}");

        var machine = VirtualMachine.Create(new MachineOptions
        {
            MemoryBytes = spec.MemoryMib * MemoryLayout.MiB,
            VcpuCount = spec.Vcpus,
            Pvm = spec.Pvm,
            Logger = spec.Logger,
        });
        try
        {
            var console = new PowerDownWatcher(spec.Serial, machine.RequestExit);
            var serial = new Serial16550(console, machine.InterruptLine(Serial16550.Com1Irq));
            machine.PortBus.Register(Serial16550.Com1Port, Serial16550.PortCount, serial, "COM1 (16550)");
            var keyboard = new I8042(() => machine.RequestExit(new VmExit(VmExitKind.Reset, "guest reset through the i8042 controller")),
                machine.InterruptLine(I8042.KeyboardIrq));
            machine.PortBus.Register(I8042.BasePort, I8042.PortCount, keyboard, "i8042");
            var bootTimer = new BootTimer(started, t => spec.Logger.LogInformation("guest boot done after {Ms:F1} ms", t.TotalMilliseconds));
            machine.MmioBus.Register(BootTimer.Address, BootTimer.Length, bootTimer, "boot timer");

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
                string cmdline = spec.Cmdline ?? DefaultLinuxCmdline;
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
            return new MicroVm(machine, serial, keyboard, bootTimer, plan, started);
        }
        catch
        {
            machine.Dispose();
            throw;
        }
    }

    public void Start() => Machine.Start();
    public bool Pause(TimeSpan timeout) => Machine.Pause(timeout);
    public void Resume() => Machine.Resume();
    public VmExit Stop(TimeSpan? timeout = null) => Machine.Stop(timeout);

    public void Dispose() => Machine.Dispose();
}
