// Over 400 lines: one System.CommandLine definition per `vm` subcommand (and the hidden bench); to be split per
// subcommand (the output, errors and flag grammars already live in Output/, Args/, DaemonClient and CliErrors).
using System.CommandLine;
using System.Globalization;
using FireSharp.Cli.Args;
using FireSharp.Cli.Output;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Grpc.Core;

namespace FireSharp.Cli;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// <c>firesharp vm ...</c>: the daemon's command-line client (connection, output and exit codes: <see cref="DaemonClient"/>,
/// <see cref="OutputOptions"/>, <see cref="ExitCodes"/>). <c>--drive</c> and <c>--net</c> are <see cref="DriveArg"/>'s
/// and <see cref="NetArg"/>'s grammars, <c>--mem</c> is <see cref="MemoryOption"/>.
/// </summary>
internal static class VmClientCommands
{
    /// <summary>Aliases of <see cref="ExitCodes"/> (older code).</summary>
    public const int ExitOk = ExitCodes.Ok, ExitFailed = ExitCodes.Failed, ExitRefused = ExitCodes.Usage, ExitUnreachable = ExitCodes.Unreachable;

    /// <summary>The hidden <c>--json</c> (= <c>-o json</c>).</summary>
    internal static Option<bool> Json => OutputOptions.Json;

    /// <summary>The connection and output options, for other client commands (<c>firesharp snapshot</c>, <c>fn</c>).</summary>
    internal static Option[] ConnectionOptions => DaemonClient.All;

    public static Command Create()
    {
        var vm = new Command("vm", "manage VMs through the FireSharp daemon");
        foreach (var o in DaemonClient.All) vm.Options.Add(o);
        vm.Subcommands.Add(CreateCommand());
        vm.Subcommands.Add(ListCommand());
        vm.Subcommands.Add(IdCommand("get", "show one VM", (c, id, o, ct) => c.GetVmAsync(new GetVmRequest { Id = id }, o).ResponseAsync));
        vm.Subcommands.Add(Waiting.StartCommand());
        vm.Subcommands.Add(IdCommand("pause", "pause a running VM", (c, id, o, ct) => c.PauseVmAsync(new PauseVmRequest { Id = id }, o).ResponseAsync));
        vm.Subcommands.Add(IdCommand("resume", "resume a paused VM", (c, id, o, ct) => c.ResumeVmAsync(new ResumeVmRequest { Id = id }, o).ResponseAsync));
        vm.Subcommands.Add(RateLimitOptions.UpdateCommand());
        vm.Subcommands.Add(StopCommand());
        vm.Subcommands.Add(RemoveCommand());
        vm.Subcommands.Add(FireSharp.Cli.ConsoleCommand.Create());
        vm.Subcommands.Add(EventsCommand());
        vm.Subcommands.Add(LogCommands.VmLogs());
        vm.Subcommands.Add(ExecCommand());
        vm.Subcommands.Add(CopyCommand.Create());
        vm.Subcommands.Add(BenchCommand());
        return vm;
    }

    // ------------------------------------------------------------------ commands

    private static Command CreateCommand()
    {
        var id = new Argument<string>("id") { Description = "the new VM's id (a-z, 0-9, '_', '.', '-')" };
        var kernel = new Option<string>("--kernel") { Description = "kernel path on the daemon's host (absolute)", Required = true };
        var initrd = new Option<string?>("--initrd") { Description = "initramfs path" };
        var cmdline = new Option<string?>("--cmdline") { Description = "kernel command line (default: FireSharp's Linux default)" };
        var vcpus = new Option<int>("--vcpus") { Description = "vCPUs", DefaultValueFactory = _ => 1 };
        var mem = new MemoryOption(128, "memory: 512M, 1G, ... (a bare number is MiB)");
        var cpuQuota = new Option<int>("--cpu-quota-millicpus") { Description = "CPU time the VM may use, in thousandths of a host CPU (1000 = one CPU; default: one per vCPU plus one)" };
        var labels = new Option<string[]>("--label") { Description = "a label key=value (repeatable)", AllowMultipleArgumentsPerToken = false };
        var drives = new Option<string[]>("--drive") { Description = $"a drive {DriveArg.Grammar} (repeatable; see the README)", HelpName = "DRIVE" };
        var nets = new Option<string[]>("--net") { Description = $"an interface {NetArg.Grammar} (repeatable)", HelpName = "NET" };
        var vsock = new Option<uint?>("--vsock-cid") { Description = "add a vsock device with this guest CID" };
        var agent = new Option<bool>("--agent") { Description = "run the guest agent" };
        var rng = new Option<bool>("--rng") { Description = "add a virtio-rng entropy device (/dev/hwrng in the guest)" };
        var rngLimit = new Option<string?>("--rng-limit") { Description = "limit the entropy device: bps=N[,iops=N] (N with K/M/G; implies --rng)" };
        var pvh = new Option<bool>("--pvh") { Description = "enter an ELF through PVH when it has both entries" };
        var netns = new Option<string?>("--netns") { Description = "a network namespace for the VM's taps (e.g. /run/netns/NAME; a jailing daemon)" };
        var start = new Option<bool>("--start") { Description = "start the VM once created" };
        var command = new Command("create", "create a VM (--wait implies --start)") { id, kernel, initrd, cmdline, vcpus, cpuQuota, labels, drives, nets, netns, vsock, agent, rng, rngLimit, pvh, start, Waiting.Wait };
        foreach (var o in mem.All) command.Options.Add(o);
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var spec = new VmSpec
            {
                Kernel = new KernelSpec
                {
                    Path = FullPath(parse.GetValue(kernel)!),
                    InitrdPath = parse.GetValue(initrd) is { } i ? FullPath(i) : "",
                    Cmdline = parse.GetValue(cmdline) ?? "",
                    PreferPvh = parse.GetValue(pvh),
                },
                Machine = new MachineSpec { Vcpus = parse.GetValue(vcpus), MemMib = mem.GetMib(parse), CpuQuotaMillicpus = parse.GetValue(cpuQuota) },
                Agent = parse.GetValue(agent),
                Rng = parse.GetValue(rng),
                NetnsPath = parse.GetValue(netns) is { } ns ? FullPath(ns) : "",
            };
            if (parse.GetValue(rngLimit) is { } limit)
            {
                var kv = ParseKv(limit, "--rng-limit");
                foreach (var k in kv.Keys)
                    if (!RateLimitOptions.DriveKeys.Contains(k)) throw new ArgumentException($"--rng-limit {limit}: unknown key '{k}' (bps, iops)");
                spec.Rng = true;
                spec.RngRateLimiter = RateLimitOptions.Drive(kv, "--rng-limit");
            }
            foreach (var d in parse.GetValue(drives) ?? []) spec.Drives.Add(ToProto(DriveArg.Parse(d), spec.Drives.Count));
            foreach (var n in parse.GetValue(nets) ?? []) spec.NetworkInterfaces.Add(ToProto(NetArg.Parse(n), spec.NetworkInterfaces.Count));
            if (parse.GetValue(vsock) is { } cid) spec.Vsock = new VsockSpec { GuestCid = cid };
            if (Waiting.Requested(parse) == WaitFor.Agent && !spec.Agent) throw new UsageException("--wait=agent needs --agent (the guest agent)", "add --agent, or wait for boot: --wait=boot");
            var request = new CreateVmRequest { Id = parse.GetValue(id)!, Spec = spec, Start = parse.GetValue(start) || Waiting.Requested(parse) != WaitFor.None };
            foreach (var (k, v) in ParseLabels(parse.GetValue(labels))) request.Labels[k] = v;
            PrintVm(parse, await Waiting.CallAsync(parse, client, options, request.Id, exists: false, restored: false, o => client.CreateVmAsync(request, o).ResponseAsync));
        }, ct));
        return command;
    }

    private static Command ListCommand()
    {
        var labels = new Option<string[]>("--label") { Description = "only VMs with this label key=value (repeatable)" };
        var states = new Option<string[]>("--state") { Description = "only VMs in this state (created, running, paused, stopping, stopped, failed; repeatable)" };
        states.CompletionSources.Add("created", "running", "paused", "stopping", "stopped", "failed");
        var command = new Command("ls", "list VMs") { labels, states };
        command.Aliases.Add("list");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var request = new ListVmsRequest();
            foreach (var (k, v) in ParseLabels(parse.GetValue(labels))) request.LabelSelector[k] = v;
            foreach (var s in parse.GetValue(states) ?? []) request.States.Add(ParseState(s));
            var vms = (await client.ListVmsAsync(request, options)).Vms;
            Printer.For(parse).List(vms, vm => vm.Id, Columns);
        }, ct));
        return command;
    }

    private static Command StopCommand()
    {
        var id = new Argument<string>("id");
        var grace = new Option<int>("--grace") { Description = "seconds to wait after Ctrl-Alt-Del before stopping by force (0 = the daemon's default)" };
        var force = new Option<bool>("--force") { Description = "stop at once" };
        var command = new Command("stop", "stop a running VM (Ctrl-Alt-Del, then by force)") { id, grace, force };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
            PrintVm(parse, await client.StopVmAsync(new StopVmRequest { Id = parse.GetValue(id)!, GracePeriodSeconds = parse.GetValue(grace), Force = parse.GetValue(force) }, options)), ct));
        return command;
    }

    private static Command RemoveCommand()
    {
        var id = new Argument<string>("id");
        var force = new Option<bool>("--force") { Description = "delete a running VM too" };
        var command = new Command("rm", "delete a VM and everything it left on the host") { id, force };
        command.Aliases.Add("delete");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var reply = await client.DeleteVmAsync(new DeleteVmRequest { Id = parse.GetValue(id)!, Force = parse.GetValue(force) }, options);
            Printer.For(parse).Message(reply, reply.Id, $"deleted {reply.Id}");
        }, ct));
        return command;
    }

    private static Command EventsCommand()
    {
        var id = new Argument<string?>("id") { Description = "only this VM's events", Arity = ArgumentArity.ZeroOrOne };
        var snapshot = new Option<bool>("--snapshot") { Description = "first the current state of each VM" };
        var command = new Command("events", "stream lifecycle events until Ctrl-C") { id, snapshot };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            using var call = client.WatchEvents(new WatchEventsRequest { Id = parse.GetValue(id) ?? "", IncludeSnapshot = parse.GetValue(snapshot) }, options);
            var printer = Printer.For(parse);
            await foreach (var ev in call.ResponseStream.ReadAllAsync(ct))
                printer.StreamItem(ev, ev.Id, $"{ev.Time?.ToDateTime().ToLocalTime():HH:mm:ss.fff} {ev.Id,-20} {Name(ev.Type),-13} {Name(ev.State),-9} {ev.Message}");
        }, ct, streaming: true));
        return command;
    }

    private static Command ExecCommand()
    {
        var id = new Argument<string>("id");
        var argv = new Argument<string[]>("command") { Description = "the program and its arguments", Arity = ArgumentArity.OneOrMore };
        var command = new Command("exec", "run a command in the guest (needs the guest agent)") { id, argv };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var request = new ExecRequest { Id = parse.GetValue(id)! };
            request.Argv.AddRange(parse.GetValue(argv) ?? []);
            var reply = await client.ExecAsync(request, options);
            using var stdout = Console.OpenStandardOutput();
            stdout.Write(reply.Stdout.Span);
            using var stderr = Console.OpenStandardError();
            stderr.Write(reply.Stderr.Span);
            Environment.ExitCode = reply.ExitCode;
        }, ct));
        return command;
    }

    /// <summary>Hidden: API latency with many VMs (make bench-api). Creates the VMs, times GetVm and ListVms, deletes them.</summary>
    private static Command BenchCommand()
    {
        var kernel = new Option<string>("--kernel") { Description = "guest for the VMs", Required = true };
        var count = new Option<int>("--vms") { DefaultValueFactory = _ => 100 };
        var gets = new Option<int>("--gets") { DefaultValueFactory = _ => 2000 };
        var lists = new Option<int>("--lists") { DefaultValueFactory = _ => 300 };
        var start = new Option<bool>("--start") { Description = "start the VMs (they keep running during the measurement)" };
        var command = new Command("bench", "measure GetVm/ListVms latency with many VMs") { kernel, count, gets, lists, start };
        command.Hidden = true;
        command.SetAction((parse, ct) => CallAsync(parse, async (client, _) =>
        {
            int n = parse.GetValue(count);
            var ids = Enumerable.Range(0, n).Select(i => $"bench-{i:D3}").ToList();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                // Create in batches of 8 (the daemon starts one worker process per VM).
                foreach (var batch in ids.Chunk(8))
                    await Task.WhenAll(batch.Select(id => client.CreateVmAsync(new CreateVmRequest
                    {
                        Id = id,
                        Start = parse.GetValue(start),
                        Labels = { ["bench"] = "api", ["shard"] = (id[^1] - '0').ToString(CultureInfo.InvariantCulture) },
                        Spec = new VmSpec { Kernel = new KernelSpec { Path = FullPath(parse.GetValue(kernel)!) }, Machine = new MachineSpec { Vcpus = 1, MemMib = 16 } },
                    }, cancellationToken: ct).ResponseAsync));
                Console.WriteLine($"created {n} VMs ({(parse.GetValue(start) ? "running" : "created, not started")}) in {sw.Elapsed.TotalSeconds:F1} s");
                var rng = new Random(1);
                for (int i = 0; i < 50; i++) await client.GetVmAsync(new GetVmRequest { Id = ids[i % n] }, cancellationToken: ct); // warm-up
                var get = await TimeAsync(parse.GetValue(gets), () => client.GetVmAsync(new GetVmRequest { Id = ids[rng.Next(n)] }, cancellationToken: ct).ResponseAsync);
                var list = await TimeAsync(parse.GetValue(lists), () => client.ListVmsAsync(new ListVmsRequest(), cancellationToken: ct).ResponseAsync);
                var filtered = await TimeAsync(parse.GetValue(lists), () => client.ListVmsAsync(new ListVmsRequest { LabelSelector = { ["shard"] = "7" } }, cancellationToken: ct).ResponseAsync);
                Console.WriteLine($"GetVm              x{get.Length,5}: p50 {Pct(get, 50):F3} ms  p99 {Pct(get, 99):F3} ms  max {get[^1]:F3} ms");
                Console.WriteLine($"ListVms ({n} VMs)   x{list.Length,5}: p50 {Pct(list, 50):F3} ms  p99 {Pct(list, 99):F3} ms  max {list[^1]:F3} ms");
                Console.WriteLine($"ListVms (selector) x{filtered.Length,5}: p50 {Pct(filtered, 50):F3} ms  p99 {Pct(filtered, 99):F3} ms  max {filtered[^1]:F3} ms");
            }
            finally
            {
                sw.Restart();
                foreach (var batch in ids.Chunk(8))
                    await Task.WhenAll(batch.Select(async id =>
                    {
                        try { await client.DeleteVmAsync(new DeleteVmRequest { Id = id, Force = true }); }
                        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound) { }
                    }));
                Console.WriteLine($"deleted {n} VMs in {sw.Elapsed.TotalSeconds:F1} s");
            }
        }, ct, streaming: true));
        return command;
    }

    private static async Task<double[]> TimeAsync<T>(int count, Func<Task<T>> call)
    {
        var ms = new double[count];
        for (int i = 0; i < count; i++)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            await call();
            ms[i] = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(ms);
        return ms;
    }

    private static double Pct(double[] sorted, int p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1)];

    private static Command IdCommand(string name, string description, Func<VmService.VmServiceClient, string, CallOptions, CancellationToken, Task<Vm>> call)
    {
        var id = new Argument<string>("id");
        var command = new Command(name, description) { id };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
            PrintVm(parse, await call(client, parse.GetValue(id)!, options, ct)), ct));
        return command;
    }

    // ------------------------------------------------------------------ plumbing

    internal static Task<int> CallAsync(ParseResult parse, Func<VmService.VmServiceClient, CallOptions, Task> body, CancellationToken ct, bool streaming = false) =>
        DaemonClient.CallAsync(parse, invoker => new VmService.VmServiceClient(invoker), body, ct, streaming);

    /// <summary>The columns of <c>vm ls</c> (WideOnly: <c>-o wide</c>).</summary>
    internal static readonly Column<Vm>[] Columns =
    [
        new("ID", vm => vm.Id),
        new("STATE", vm => Name(vm.State), Markup: vm => StateMarkup(vm.State)),
        new("VCPUS", vm => vm.Spec.Machine.Vcpus.ToString(CultureInfo.InvariantCulture)),
        new("MEM", vm => $"{vm.Spec.Machine.MemMib}M"),
        new("PID", vm => vm.WorkerPid == 0 ? "-" : vm.WorkerPid.ToString(CultureInfo.InvariantCulture)),
        new("AGE", vm => Age(vm.CreatedAt)),
        new("LABELS", vm => Labels(vm.Labels)),
        new("DRIVES", vm => vm.Spec.Drives.Count.ToString(CultureInfo.InvariantCulture), WideOnly: true),
        new("NICS", vm => vm.Spec.NetworkInterfaces.Count.ToString(CultureInfo.InvariantCulture), WideOnly: true),
        new("VSOCK", vm => vm.Spec.Vsock is { } v ? v.GuestCid.ToString(CultureInfo.InvariantCulture) : "-", WideOnly: true),
        new("AGENT", vm => vm.Spec.Agent ? (vm.AgentReady ? "ready" : "starting") : "-", WideOnly: true),
        new("KERNEL", vm => vm.Spec.Kernel.Path, WideOnly: true),
        new("CREATED", vm => vm.CreatedAt?.ToDateTime().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture) ?? "-", WideOnly: true),
        new("EXIT", vm => vm.Exit is null ? "" : $"{Name(vm.Exit.Kind)}: {vm.Exit.Reason}"),
    ];

    internal static void PrintVm(ParseResult parse, Vm vm) => Printer.For(parse).Item(vm, vm.Id, d =>
    {
        d.Row("id", vm.Id);
        d.Row("state", Name(vm.State), StateMarkup(vm.State));
        d.Row("machine", $"{vm.Spec.Machine.Vcpus} vCPU, {vm.Spec.Machine.MemMib} MiB");
        d.Row("kernel", vm.Spec.Kernel.Path + (vm.Spec.Kernel.InitrdPath.Length > 0 ? $" + {vm.Spec.Kernel.InitrdPath}" : ""));
        if (vm.Spec.Kernel.Cmdline.Length > 0) d.Row("cmdline", vm.Spec.Kernel.Cmdline);
        foreach (var drive in vm.Spec.Drives)
            d.Row("drive " + drive.Id, drive.Path + (drive.ReadOnly ? " (ro)" : "") + (drive.Root ? " (root)" : ""));
        foreach (var nic in vm.Spec.NetworkInterfaces)
            d.Row("net " + nic.Id, (nic.HostCase == NetworkInterfaceSpec.HostOneofCase.Auto ? "auto tap" : "tap " + nic.Tap)
                + (nic.Mac.Length > 0 ? $", mac {nic.Mac}" : "") + (nic.Ip.Length > 0 ? $", ip {nic.Ip}" : ""));
        if (vm.Spec.Vsock is { } vsock) d.Row("vsock", $"guest CID {vsock.GuestCid}");
        if (vm.Spec.Agent) d.Row("agent", vm.AgentReady ? "ready" : "not ready yet");
        if (vm.Labels.Count > 0) d.Row("labels", Labels(vm.Labels));
        d.Row("worker pid", vm.WorkerPid == 0 ? "-" : vm.WorkerPid.ToString(CultureInfo.InvariantCulture));
        d.Row("created", Time(vm.CreatedAt));
        if (vm.StartedAt is not null) d.Row("started", Time(vm.StartedAt));
        if (vm.BootTimeMs > 0) d.Row("boot done", $"{vm.BootTimeMs:F1} ms");
        if (vm.Exit is not null) d.Row("exit", $"{Name(vm.Exit.Kind)}: {vm.Exit.Reason}");
    });

    private static string Time(Google.Protobuf.WellKnownTypes.Timestamp? t) =>
        t?.ToDateTime().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "-";

    /// <summary>How long ago, as kubectl shows it: 42s, 5m, 3h, 2d.</summary>
    internal static string Age(Google.Protobuf.WellKnownTypes.Timestamp? t)
    {
        if (t is null) return "-";
        var age = DateTime.UtcNow - t.ToDateTime();
        return age.TotalSeconds < 120 ? $"{Math.Max(0, (int)age.TotalSeconds)}s"
            : age.TotalMinutes < 120 ? $"{(int)age.TotalMinutes}m"
            : age.TotalHours < 48 ? $"{(int)age.TotalHours}h"
            : $"{(int)age.TotalDays}d";
    }

    private static string Labels(Google.Protobuf.Collections.MapField<string, string> labels) =>
        string.Join(",", labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"));

    private static string StateMarkup(VmState s) => s switch
    {
        VmState.Running => "[green]running[/]",
        VmState.Failed => "[red]failed[/]",
        VmState.Paused => "[yellow]paused[/]",
        _ => Name(s),
    };

    internal static string Name(VmState s) => s switch
    {
        VmState.Creating => "creating", VmState.Created => "created", VmState.Running => "running", VmState.Paused => "paused",
        VmState.Stopping => "stopping", VmState.Stopped => "stopped", VmState.Failed => "failed", _ => "unspecified",
    };

    internal static string Name(EventType t) => t switch
    {
        EventType.Snapshot => "snapshot", EventType.Created => "created", EventType.StateChanged => "state-changed",
        EventType.BootDone => "boot-done", EventType.Exited => "exited", EventType.Deleted => "deleted", EventType.Dropped => "dropped",
        _ => "unspecified",
    };

    internal static string Name(ExitKind k) => k switch
    {
        ExitKind.Reset => "reset", ExitKind.PowerOff => "power-off", ExitKind.Stopped => "stopped", ExitKind.Halt => "halt",
        ExitKind.TripleFault => "triple-fault", ExitKind.FailEntry => "fail-entry", ExitKind.InternalError => "internal-error",
        ExitKind.GuestCrash => "guest-crash", ExitKind.VmmError => "vmm-error", ExitKind.WorkerDied => "worker-died", ExitKind.Seccomp => "seccomp", ExitKind.OutOfMemory => "out-of-memory", _ => "",
    };

    private static VmState ParseState(string s) => s.ToLowerInvariant() switch
    {
        "creating" => VmState.Creating, "created" => VmState.Created, "running" => VmState.Running, "paused" => VmState.Paused,
        "stopping" => VmState.Stopping, "stopped" => VmState.Stopped, "failed" => VmState.Failed,
        _ => throw new UsageException($"--state {s}: not a state", "--state created|running|paused|stopping|stopped|failed"),
    };

    private static string FullPath(string p) => Path.GetFullPath(p);

    private static IEnumerable<(string, string)> ParseLabels(string[]? labels)
    {
        foreach (var l in labels ?? [])
        {
            int eq = l.IndexOf('=');
            if (eq <= 0) throw new UsageException($"--label {l}: expected key=value", "--label KEY=VALUE");
            yield return (l[..eq], l[(eq + 1)..]);
        }
    }

    private static Dictionary<string, string> ParseKv(string text, string what)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            if (eq < 0) d[part] = "";
            else if (eq == 0) throw new ArgumentException($"{what} {text}: '{part}' has no key");
            else d[part[..eq]] = part[(eq + 1)..];
        }
        return d;
    }

    private static DriveSpec ToProto(DriveArg d, int index)
    {
        d.Only("--drive", "vm create", serial: false);
        return new DriveSpec
        {
            Id = d.Id ?? "drive" + index.ToString(CultureInfo.InvariantCulture),
            Path = FullPath(d.Path!),
            ReadOnly = d.ReadOnly,
            Root = d.Root,
            RateLimiter = RateLimitOptions.Drive(d.Bps, d.Iops),
        };
    }

    private static NetworkInterfaceSpec ToProto(NetArg n, int index)
    {
        if (n.Gateway is not null) throw new UsageException("--net gw=: vm create configures no gateway (only ip=)", "--net " + NetArg.Grammar);
        var spec = new NetworkInterfaceSpec { Id = n.Id ?? "net" + index.ToString(CultureInfo.InvariantCulture), Mac = n.Mac ?? "", Ip = n.Ip ?? "" };
        if (n.Auto) spec.Auto = true;
        else spec.Tap = n.Tap!;
        (spec.RxRateLimiter, spec.TxRateLimiter) = RateLimitOptions.Net(n);
        return spec;
    }
}
