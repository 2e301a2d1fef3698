using System.CommandLine;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Boot;
using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Kvm;
using FireSharp.Snapshot;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

using FireSharp.Logging;
using FireSharp.Cli.Args;
using FireSharp.Daemon.Hosting;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp run</c>: boots one guest in the foreground with its console on stdout (or a file).
/// Exit codes (<see cref="ExitCodes"/>): 0 the guest reset or powered off; 1 it ended abnormally (triple fault,
/// emulation failure, ...) or the snapshot requested with --snapshot-dir failed; 2 invalid input (missing or
/// malformed kernel, bad sizes, a snapshot that cannot be restored); 5 KVM is unusable. <c>--drive</c>, <c>--net</c>
/// and <c>--mem</c> are <see cref="DriveArg"/>'s, <see cref="NetArg"/>'s and <see cref="MemoryOption"/>'s grammars.
/// The snapshot options (--restore, --snapshot-dir, ...) are described in <see cref="RunSnapshotOptions"/>.
/// </summary>
internal static class RunCommand
{
    public const int ExitClean = ExitCodes.Ok, ExitGuestFailed = ExitCodes.Failed, ExitBadInput = ExitCodes.Usage, ExitNoKvm = ExitCodes.NoKvm,
        ExitSnapshotFailed = ExitCodes.Failed;

    public static Command Create()
    {
        var kernel = new Option<string?>("--kernel") { Description = "kernel: a PVH ELF, an ELF vmlinux or a bzImage (or use --restore)" };
        var initrd = new Option<string?>("--initrd") { Description = "initramfs to load at the top of low memory" };
        var memMib = new MemoryOption(128, "guest memory: 512M, 1G, ... (a bare number is MiB)");
        var vcpus = new Option<int>("--vcpus") { Description = "number of vCPUs", DefaultValueFactory = _ => 1 };
        var cmdline = new Option<string?>("--cmdline") { Description = "kernel command line (Linux default: console=ttyS0 reboot=k panic=-1 ...)" };
        var serial = new Option<string>("--serial") { Description = "where the COM1 console goes: stdout or a file path", DefaultValueFactory = _ => "stdout" };
        var pvh = new Option<bool>("--pvh") { Description = "enter an ELF kernel through PVH even if it has a 64-bit entry" };
        var drives = new Option<string[]>("--drive")
        {
            Description = $"virtio-blk drive, repeatable: {DriveArg.Grammar} (a raw image; serial = what GET_ID reads). "
                + "Without --initrd the drive marked root, else the first one, is the root filesystem (root=/dev/vdX)",
            Arity = ArgumentArity.ZeroOrMore,
            HelpName = "DRIVE",
        };
        var vsockPath = new Option<string?>("--vsock")
        {
            Description = "add a virtio-vsock device with a Firecracker-style hybrid Unix socket at PATH (created; must not exist): "
                + "host clients write 'CONNECT <port>\\n' to reach a guest port; guest connections to CID 2 port P go to PATH_P. "
                + "With --restore: this VM's socket path for the snapshot's vsock device",
        };
        var vsockCid = new Option<ulong?>("--vsock-cid") { Description = "the guest's vsock CID (3..4294967294; default 3)" };
        var nets = new Option<string[]>("--net")
        {
            Description = $"virtio-net interface on a tap, repeatable (eth0, eth1, ... in the guest): {NetArg.Grammar}. "
                + "TAP is an existing tap (or one created with that name), auto creates fstapN; both go away with the VM unless persistent. "
                + "ip=/gw= add the kernel's ip= setting for that interface. With --restore: tap=TAP[,id=ID] per interface of the snapshot, in order",
            Arity = ArgumentArity.ZeroOrMore,
            HelpName = "NET",
        };
        var rng = new Option<bool>("--rng")
        {
            Description = "add a virtio-rng entropy device: the guest reads the host's CSPRNG through /dev/hwrng "
                + "(off unless asked for; with --restore the snapshot says whether there is one)",
        };
        var agent = new Option<bool>("--agent")
        {
            Description = "start the guest agent (firesharp.agent=1 on the command line; the rootfs has it): needs --vsock; "
                + "its ready report (guest CID 2 port 53 -> PATH_53) is logged, then `firesharp agent exec --vsock PATH -- CMD` reaches it",
        };
        var jail = new Option<bool>("--jail") { Description = "run the VM in a jailed worker process, as `firesharp serve` does as root (own uid, namespaces, pivot_root, no capabilities, its cgroup; needs root)" };
        var worker = new Option<bool>("--worker") { Description = "run the VM in a firesharp-vmm worker process through a private daemon core, as `firesharp serve` does, but not jailed (--jail implies a worker)" };
        var logLevel = new Option<LogLevel>("--log-level")
        {
            Description = $"stderr log level: {LogLevels.Names}",
            DefaultValueFactory = _ => LogLevel.Warning,
            HelpName = "LEVEL",
            CustomParser = r =>
            {
                if (LogLevels.TryParse(r.Tokens.Count > 0 ? r.Tokens[^1].Value : null, out var l)) return l;
                r.AddError($"--log-level {(r.Tokens.Count > 0 ? r.Tokens[^1].Value : "")}: not a level ({LogLevels.Names})");
                return LogLevel.Warning;
            },
        };
        logLevel.CompletionSources.Add("trace", "debug", "information", "warning", "error", "critical", "none");

        var command = new Command("run", "run a guest in the foreground until it resets, powers off or fails")
        {
            kernel, initrd, vcpus, cmdline, serial, pvh, drives, vsockPath, vsockCid, nets, rng, agent, logLevel, jail, worker,
        };
        foreach (var o in memMib.All) command.Options.Add(o);
        var snapshotOptions = new RunSnapshotOptions();
        foreach (var o in snapshotOptions.All) command.Options.Add(o);
        command.SetAction(parse => ParseDrives(parse.GetValue(drives), parse.GetValue(initrd)) is not { } driveSpecs
            || !TryParseVsock(parse.GetValue(vsockPath), parse.GetValue(vsockCid), out var vsockSpec)
            || ParseNets(parse.GetValue(nets)) is not { } netSpecs
            || !TryAgentCmdline(parse.GetValue(agent), parse.GetValue(cmdline), vsockSpec, parse.GetValue(snapshotOptions.Restore), out var effectiveCmdline) ? ExitBadInput
            : parse.GetValue(jail) || parse.GetValue(worker) ? RunInWorker(parse.GetValue(kernel), parse.GetValue(initrd), (ulong)memMib.GetMib(parse), parse.GetValue(vcpus), effectiveCmdline,
                parse.GetValue(pvh), driveSpecs, vsockSpec, netSpecs, parse.GetValue(rng), snapshotOptions.Parse(parse), parse.GetValue(jail), parse.GetValue(logLevel))
            : Execute(new VmSpec
        {
            KernelPath = parse.GetValue(kernel) ?? "",
            InitrdPath = parse.GetValue(initrd),
            MemoryMib = (ulong)memMib.GetMib(parse),
            Vcpus = parse.GetValue(vcpus),
            Cmdline = effectiveCmdline,
            PreferPvh = parse.GetValue(pvh),
            Drives = driveSpecs,
            Vsock = vsockSpec,
            NetworkInterfaces = netSpecs,
            Rng = parse.GetValue(rng) ? new RngSpec() : null,
        }, parse.GetValue(serial)!, parse.GetValue(logLevel), snapshotOptions.Parse(parse), parse.GetValue(kernel), parse.GetValue(agent)));
        return command;
    }

    /// <summary>--jail / --worker: the VM runs in a worker process (<see cref="RunJailed"/>), without --net, --vsock or --agent for now.</summary>
    private static int RunInWorker(string? kernel, string? initrd, ulong memMib, int vcpus, string? cmdline, bool pvh, List<DriveSpec> drives,
        VsockDeviceSpec? vsock, List<NetworkInterfaceSpec> nets, bool rng, RunSnapshotOptions.Settings snap, bool jail, LogLevel level)
    {
        if (nets.Count > 0 || vsock is not null) return Fail(ExitBadInput, "--jail/--worker run a VM without --net or --vsock/--agent for now (see docs/isolation.md)");
        if (snap.RestoreDir is not null && (drives.Count > 0 || rng)) return Fail(ExitBadInput, "--drive and --rng cannot be combined with --restore: a restored VM has its snapshot's devices");
        FireSharp.Daemon.Vms.VmConfig? config = kernel is null ? null : new FireSharp.Daemon.Vms.VmConfig
        {
            Kernel = new FireSharp.Daemon.Vms.KernelConfig(Path.GetFullPath(kernel)) { InitrdPath = initrd is { } i ? Path.GetFullPath(i) : null, Cmdline = cmdline, PreferPvh = pvh },
            Vcpus = vcpus,
            MemMib = (long)memMib,
            Drives = [.. drives.Select((d, n) => new FireSharp.Daemon.Vms.DriveConfig($"drive{n}", Path.GetFullPath(d.Path)) { ReadOnly = d.ReadOnly, Root = d.IsRoot })],
            Rng = rng,
        };
        return RunJailed.Execute(config, snap, jail, level);
    }

    private static int Execute(VmSpec spec, string serialTarget, LogLevel level, RunSnapshotOptions.Settings snap, string? kernelOption, bool watchAgent)
    {
        long start = Stopwatch.GetTimestamp();
        if (snap.Validate(kernelOption) is { } usage) return Fail(ExitBadInput, usage);
        if (snap.SnapshotKeyPath is { } keyPath)
        {
            try
            {
                snap = snap with { Keys = SnapshotKeys.FromPath(keyPath) };
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or ArgumentException)
            {
                return Fail(ExitBadInput, $"--snapshot-key {keyPath}: {e.Message}");
            }
        }
        if (snap.RestoreDir is not null && spec.Drives.Count > 0)
            return Fail(ExitBadInput, "--drive cannot be combined with --restore: a restored VM has its snapshot's devices");
        if (snap.RestoreDir is not null && spec.Rng is not null)
            return Fail(ExitBadInput, "--rng cannot be combined with --restore: a restored VM has its snapshot's devices (its entropy device too, if it had one)");
        // With --restore, --vsock PATH is this clone's socket path; the CID is the snapshot's.
        if (snap.RestoreDir is not null && spec.Vsock is { GuestCid: not 3 })
            return Fail(ExitBadInput, "--vsock-cid cannot be combined with --restore: a restored VM keeps its snapshot's CID (--vsock PATH sets its socket path)");
        var restoreTaps = snap.RestoreDir is not null ? TapOverrides(spec.NetworkInterfaces) : null;
        if (snap.RestoreDir is not null && restoreTaps is null) return ExitBadInput;
        var logger = new StderrLogger(level);
        using var sink = serialTarget == "stdout" ? StreamSerialSink.ForStandardOutput() : OpenFileSink(serialTarget);
        if (sink is null) return Fail(ExitBadInput, $"cannot open serial output file {serialTarget}");

        MicroVm vm;
        long restoreStart = start;
        if (snap.RestoreDir is not null)
        {
            RunSnapshotOptions.WarmUpProcess();
            restoreStart = Stopwatch.GetTimestamp();
        }
        try
        {
            vm = snap.RestoreDir is { } restoreDir
                ? SnapshotRestore.Restore(restoreDir, new RestoreOverrides { Serial = sink, Logger = logger, TapNames = restoreTaps!, VsockUdsPath = spec.Vsock?.UdsPath, Keys = snap.Keys })
                : MicroVm.Create(spec with { Serial = sink, Logger = logger }, start);
        }
        catch (SnapshotException e) when (e.InnerException is KvmException k && k.Operation.StartsWith("open ", StringComparison.Ordinal)) { return Fail(ExitNoKvm, e.Message); }
        catch (SnapshotException e) { return Fail(ExitBadInput, $"cannot restore ({e.Reason}): {e.Message}"); }
        catch (BootException e) { return Fail(ExitBadInput, e.Message); }
        catch (MachineConfigException e) { return Fail(ExitBadInput, e.Message); }
        catch (DeviceConfigException e) { return Fail(ExitBadInput, e.Message); }
        catch (KvmException e) when (e.Operation.StartsWith("open ", StringComparison.Ordinal)) { return Fail(ExitNoKvm, e.Message); }
        catch (KvmException e) { return Fail(ExitGuestFailed, e.Message); }

        using (vm)
        {
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "SIGTERM")); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "interrupted")); });
            StartInputPump(vm.Serial);
            var snapshotFailed = new StrongBox<bool>();
            snap.StartWatchers(vm, logger, restoreStart, snapshotFailed);
            // Only with --agent: a caller that put firesharp.agent=1 in --cmdline may listen for the report itself.
            using var agentReady = watchAgent && spec.Vsock is { } v ? WatchAgentReady(v.UdsPath, logger, start) : null;
            if (!vm.IsRestored) vm.Start(); // a restore resumes the vCPUs itself
            RipSampler.StartIfRequested(vm.Machine);
            var exit = vm.Exited.GetAwaiter().GetResult();
            double ranMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            RunLog.GuestEnded(logger, ranMs, exit);
            if (snapshotFailed.Value) return ExitSnapshotFailed;
            if (exit.IsClean) return ExitClean;
            return Fail(ExitGuestFailed, $"guest failed: {exit}");
        }
    }

    /// <summary>
    /// --agent: the kernel command line with the agent's start key added (the Linux default line when none was given).
    /// False (after printing the error) without --vsock or with --restore (a restored guest's agent is already running).
    /// </summary>
    private static bool TryAgentCmdline(bool agent, string? cmdline, VsockDeviceSpec? vsock, string? restoreDir, out string? effective)
    {
        effective = cmdline;
        if (!agent) return true;
        if (vsock is null) { Fail(ExitBadInput, "--agent needs --vsock PATH (the agent listens on vsock)"); return false; }
        if (restoreDir is not null) { Fail(ExitBadInput, "--agent cannot be combined with --restore: the snapshot's agent is already running"); return false; }
        effective = (cmdline ?? MicroVm.DefaultLinuxCmdline) + " " + new AgentBootConfig().ToCmdline();
        return true;
    }

    /// <summary>Listens at PATH_53 for the agent's ready report and logs it (a warning, so it shows at the default level).</summary>
    private static AgentReadyListener? WatchAgentReady(string udsPath, ILogger logger, long start)
    {
        string path = HybridVsock.GuestInitiatedPath(udsPath, AgentProtocol.DefaultReadyPort);
        AgentReadyListener listener;
        try
        {
            listener = AgentReadyListener.Bind(path);
        }
        catch (Exception e) when (e is AgentException or IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            RunLog.AgentReadyUnavailable(logger, path, e.Message);
            return null;
        }
        _ = Task.Run(async () =>
        {
            try
            {
                var ready = await listener.WaitAsync().ConfigureAwait(false);
                double readyMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                RunLog.AgentReady(logger, ready.Agent?.Version, readyMs, udsPath);
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException or IOException or System.Net.Sockets.SocketException) { }
        });
        return listener;
    }

    /// <summary>
    /// The --drive arguments as drive specs; without an initrd the drive marked :root, or else the first one,
    /// is the root. Null (after printing the error) for bad syntax.
    /// </summary>
    private static List<DriveSpec>? ParseDrives(string[]? args, string? initrd)
    {
        var list = new List<DriveSpec>();
        try
        {
            foreach (var a in args ?? [])
            {
                var d = DriveArg.Parse(a);
                VirtioBlock.CheckSerial(d.Serial, "--drive");
                list.Add(new DriveSpec
                {
                    Path = d.Path!, Id = d.Id, ReadOnly = d.ReadOnly, IsRoot = d.Root, Serial = d.Serial,
                    RateLimiter = FireSharp.Devices.RateLimiting.RateLimiterSpec.PerSecond(d.Bps, d.Iops),
                });
            }
        }
        catch (ArgException e)
        {
            Fail(ExitBadInput, e.Message);
            Console.Error.WriteLine("hint: " + e.Hint);
            return null;
        }
        catch (VirtioConfigException e)
        {
            Fail(ExitBadInput, e.Message);
            return null;
        }
        if (initrd is null && list.Count > 0 && !list.Any(d => d.IsRoot)) list[0] = list[0] with { IsRoot = true };
        return list;
    }

    /// <summary>The --net arguments as interfaces net0, net1, ...; null (after printing the error) for bad input.</summary>
    private static List<NetworkInterfaceSpec>? ParseNets(string[]? args)
    {
        var list = new List<NetworkInterfaceSpec>();
        try
        {
            foreach (var a in args ?? [])
            {
                var n = NetArg.Parse(a);
                list.Add(NetworkInterfaceSpec.Parse(n.ToVmmSyntax(), n.Id ?? NetInterfaceId(list.Count)));
            }
            NetworkInterfaceSpec.Validate(list);
        }
        catch (Exception e) when (e is ArgException or NetConfigException or FireSharp.Devices.RateLimiting.RateLimiterConfigException)
        {
            Fail(ExitBadInput, e.Message);
            Console.Error.WriteLine("hint: " + (e is ArgException a ? a.Hint : "--net " + NetArg.Grammar));
            return null;
        }
        return list;
    }

    /// <summary>The id of the CLI's <paramref name="index"/>th interface (what a snapshot records, and --net on --restore overrides).</summary>
    public static string NetInterfaceId(int index) => "net" + index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>--net on --restore: a tap per interface of the snapshot, in order; nothing else can change.</summary>
    private static Dictionary<string, string>? TapOverrides(IReadOnlyList<NetworkInterfaceSpec> nets)
    {
        var taps = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var n in nets)
        {
            if (n.TapName is null || n.Mac is not null || n.Ipv4 is not null)
            {
                Fail(ExitBadInput, "with --restore, --net takes only a tap name per interface (the MAC and guest settings are the snapshot's)");
                return null;
            }
            taps[n.Id] = n.TapName;
        }
        return taps;
    }

    /// <summary>--vsock PATH [--vsock-cid N] as a device spec (null without --vsock); false (after printing the error) for bad input.</summary>
    private static bool TryParseVsock(string? path, ulong? cid, out VsockDeviceSpec? spec)
    {
        spec = null;
        if (path is null)
        {
            if (cid is null) return true;
            Fail(ExitBadInput, "--vsock-cid needs --vsock PATH");
            return false;
        }
        spec = new VsockDeviceSpec(cid ?? 3, path);
        try
        {
            spec.Validate("--vsock");
            return true;
        }
        catch (VirtioConfigException e)
        {
            Fail(ExitBadInput, e.Message);
            return false;
        }
    }

    private static StreamSerialSink? OpenFileSink(string path)
    {
        try { return StreamSerialSink.ForFile(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Forwards host stdin to the guest's COM1 when stdin is interactive or a pipe.</summary>
    private static void StartInputPump(Serial16550 serial)
    {
        if (!Console.IsInputRedirected && !Environment.UserInteractive) return;
        var thread = new Thread(() =>
        {
            using var stdin = Console.OpenStandardInput();
            var buffer = new byte[256];
            int n;
            while ((n = stdin.Read(buffer)) > 0)
            {
                var data = buffer.AsSpan(0, n);
                while (!data.IsEmpty)
                {
                    int taken = serial.EnqueueInput(data);
                    data = data[taken..];
                    if (taken == 0) Thread.Sleep(10); // guest not draining: wait rather than drop keystrokes
                }
            }
        }) { IsBackground = true, Name = "stdin" };
        thread.Start();
    }

    private static int Fail(int code, string message)
    {
        Console.Error.WriteLine($"firesharp: error: {message}");
        return code;
    }
}
