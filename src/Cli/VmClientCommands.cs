// Over 400 lines: one System.CommandLine definition per `vm` subcommand; to be split per subcommand with
// the CLI conventions of the observability/CLI issue (13).
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using FireSharp.Daemon;
using FireSharp.Proto.V1;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Spectre.Console;

namespace FireSharp.Cli;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// <c>firesharp vm ...</c>: the daemon's command-line client. Talks to the Unix socket (default
/// /run/firesharp/firesharp.sock, or $FIRESHARP_SOCKET), or with <c>--host https://h:p --cert --key --ca</c>
/// over TCP with mutual TLS. Prints tables, or JSON with <c>--json</c>.
/// Exit codes: 0 done; 1 the daemon failed the call; 2 the request was refused (invalid, not found, wrong
/// state, unimplemented); 3 the daemon cannot be reached.
/// </summary>
internal static class VmClientCommands
{
    public const int ExitOk = 0, ExitFailed = 1, ExitRefused = 2, ExitUnreachable = 3;

    private static readonly Option<string> Socket = new("--socket")
    {
        Description = "the daemon's Unix socket",
        Recursive = true,
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("FIRESHARP_SOCKET") is { Length: > 0 } s ? s : DaemonChannel.DefaultSocket,
    };
    private static readonly Option<string?> Host = new("--host") { Description = "TCP address https://host:port (mutual TLS; needs --cert, --key, --ca)", Recursive = true };
    private static readonly Option<string?> Cert = new("--cert") { Description = "client certificate (PEM) for --host", Recursive = true };
    private static readonly Option<string?> Key = new("--key") { Description = "client key (PEM) for --host", Recursive = true };
    private static readonly Option<string?> Ca = new("--ca") { Description = "CA certificate (PEM) the daemon's certificate must chain to", Recursive = true };
    internal static readonly Option<bool> Json = new("--json") { Description = "print JSON instead of tables", Recursive = true };
    private static Option<TimeSpan?> Timeout => Deadlines.Timeout;

    /// <summary>The connection and output options, for other client commands (<c>firesharp snapshot</c>).</summary>
    internal static Option[] ConnectionOptions => [Socket, Host, Cert, Key, Ca, Json, Timeout];

    public static Command Create()
    {
        var vm = new Command("vm", "manage VMs through the FireSharp daemon") { Socket, Host, Cert, Key, Ca, Json, Timeout };
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
        var mem = new Option<long>("--mem-mib") { Description = "memory in MiB", DefaultValueFactory = _ => 128 };
        var cpuQuota = new Option<int>("--cpu-quota-millicpus") { Description = "CPU time the VM may use, in thousandths of a host CPU (1000 = one CPU; default: one per vCPU plus one)" };
        var labels = new Option<string[]>("--label") { Description = "a label key=value (repeatable)", AllowMultipleArgumentsPerToken = false };
        var drives = new Option<string[]>("--drive") { Description = "a drive id=ID,path=PATH[,ro][,root][,bps=N][,iops=N] (repeatable; N with K/M/G)" };
        var nets = new Option<string[]>("--net") { Description = "an interface id=ID,tap=NAME|auto[,mac=MAC][,ip=A.B.C.D/N][,bps=N][,iops=N][,rx-bps=N]... (repeatable)" };
        var vsock = new Option<uint?>("--vsock-cid") { Description = "add a vsock device with this guest CID" };
        var agent = new Option<bool>("--agent") { Description = "run the guest agent" };
        var rng = new Option<bool>("--rng") { Description = "add a virtio-rng entropy device (/dev/hwrng in the guest)" };
        var rngLimit = new Option<string?>("--rng-limit") { Description = "limit the entropy device: bps=N[,iops=N] (N with K/M/G; implies --rng)" };
        var pvh = new Option<bool>("--pvh") { Description = "enter an ELF through PVH when it has both entries" };
        var netns = new Option<string?>("--netns") { Description = "a network namespace for the VM's taps (e.g. /run/netns/NAME; a jailing daemon)" };
        var start = new Option<bool>("--start") { Description = "start the VM once created" };
        var command = new Command("create", "create a VM (--wait implies --start)") { id, kernel, initrd, cmdline, vcpus, mem, cpuQuota, labels, drives, nets, netns, vsock, agent, rng, rngLimit, pvh, start, Waiting.Wait };
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
                Machine = new MachineSpec { Vcpus = parse.GetValue(vcpus), MemMib = parse.GetValue(mem), CpuQuotaMillicpus = parse.GetValue(cpuQuota) },
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
            foreach (var d in parse.GetValue(drives) ?? []) spec.Drives.Add(ParseDrive(d));
            foreach (var n in parse.GetValue(nets) ?? []) spec.NetworkInterfaces.Add(ParseNet(n));
            if (parse.GetValue(vsock) is { } cid) spec.Vsock = new VsockSpec { GuestCid = cid };
            if (Waiting.Requested(parse) == WaitFor.Agent && !spec.Agent) throw new ArgumentException("--wait=agent needs --agent (the guest agent)");
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
        var command = new Command("ls", "list VMs") { labels, states };
        command.Aliases.Add("list");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var request = new ListVmsRequest();
            foreach (var (k, v) in ParseLabels(parse.GetValue(labels))) request.LabelSelector[k] = v;
            foreach (var s in parse.GetValue(states) ?? []) request.States.Add(ParseState(s));
            var vms = (await client.ListVmsAsync(request, options)).Vms;
            if (parse.GetValue(Json))
            {
                Console.WriteLine(JsonSerializer.Serialize(vms.Select(VmJson.From).ToList(), CliJsonContext.Default.ListVmJson));
                return;
            }
            var table = new Table().Border(TableBorder.Simple);
            foreach (var h in (string[])["ID", "STATE", "VCPUS", "MEM", "PID", "CREATED", "LABELS", "EXIT"]) table.AddColumn(h);
            foreach (var vm in vms)
                table.AddRow(Markup.Escape(vm.Id), StateMarkup(vm.State), vm.Spec.Machine.Vcpus.ToString(CultureInfo.InvariantCulture),
                    $"{vm.Spec.Machine.MemMib} MiB", vm.WorkerPid == 0 ? "-" : vm.WorkerPid.ToString(CultureInfo.InvariantCulture),
                    vm.CreatedAt?.ToDateTime().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "-",
                    Markup.Escape(string.Join(",", vm.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"))),
                    Markup.Escape(vm.Exit is null ? "" : $"{vm.Exit.Kind}: {vm.Exit.Reason}"));
            AnsiConsole.Write(table);
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
            if (parse.GetValue(Json)) Console.WriteLine(JsonSerializer.Serialize(new DeletedJson(reply.Id), CliJsonContext.Default.DeletedJson));
            else Console.WriteLine($"deleted {reply.Id}");
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
            bool json = parse.GetValue(Json);
            await foreach (var ev in call.ResponseStream.ReadAllAsync(ct))
            {
                if (json) Console.WriteLine(JsonSerializer.Serialize(EventJson.From(ev), CliJsonContext.Default.EventJson));
                else Console.WriteLine($"{ev.Time?.ToDateTime().ToLocalTime():HH:mm:ss.fff} {ev.Id,-20} {Name(ev.Type),-13} {Name(ev.State),-9} {ev.Message}");
            }
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

    internal static async Task<int> CallAsync(ParseResult parse, Func<VmService.VmServiceClient, CallOptions, Task> body, CancellationToken ct, bool streaming = false)
    {
        GrpcChannel channel;
        try
        {
            channel = parse.GetValue(Host) is { } host
                ? DaemonChannel.ForTcp(host,
                    parse.GetValue(Cert) ?? throw new ArgumentException("--host needs --cert"),
                    parse.GetValue(Key) ?? throw new ArgumentException("--host needs --key"),
                    parse.GetValue(Ca) ?? throw new ArgumentException("--host needs --ca"))
                : DaemonChannel.ForUnixSocket(parse.GetValue(Socket)!);
        }
        catch (Exception e) when (e is ArgumentException or IOException or System.Security.Cryptography.CryptographicException)
        {
            Console.Error.WriteLine($"firesharp: {e.Message}");
            return ExitRefused;
        }
        using (channel)
        {
            var options = new CallOptions(cancellationToken: ct, deadline: streaming ? null : Deadlines.For(parse));
            try
            {
                await body(new VmService.VmServiceClient(channel), options);
                return Environment.ExitCode is var code and not 0 ? code : ExitOk;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
                return ExitOk; // Ctrl-C on a stream
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return ExitOk;
            }
            catch (RpcException e)
            {
                Console.Error.WriteLine($"firesharp: {e.StatusCode}: {e.Status.Detail}");
                return e.StatusCode switch
                {
                    StatusCode.InvalidArgument or StatusCode.NotFound or StatusCode.AlreadyExists or StatusCode.FailedPrecondition
                        or StatusCode.Unimplemented or StatusCode.OutOfRange or StatusCode.ResourceExhausted => ExitRefused,
                    StatusCode.Unavailable => ExitUnreachable,
                    _ => ExitFailed,
                };
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"firesharp: {e.Message}");
                return ExitRefused;
            }
        }
    }

    internal static void PrintVm(ParseResult parse, Vm vm)
    {
        if (parse.GetValue(Json))
        {
            Console.WriteLine(JsonSerializer.Serialize(VmJson.From(vm), CliJsonContext.Default.VmJson));
            return;
        }
        var grid = new Grid().AddColumn().AddColumn();
        void Row(string k, string v) => grid.AddRow(new Markup($"[bold]{k}[/]"), new Markup(v));
        Row("id", Markup.Escape(vm.Id));
        Row("state", StateMarkup(vm.State));
        Row("machine", $"{vm.Spec.Machine.Vcpus} vCPU, {vm.Spec.Machine.MemMib} MiB");
        Row("kernel", Markup.Escape(vm.Spec.Kernel.Path + (vm.Spec.Kernel.InitrdPath.Length > 0 ? $" + {vm.Spec.Kernel.InitrdPath}" : "")));
        if (vm.Spec.Kernel.Cmdline.Length > 0) Row("cmdline", Markup.Escape(vm.Spec.Kernel.Cmdline));
        if (vm.Labels.Count > 0) Row("labels", Markup.Escape(string.Join(", ", vm.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}={l.Value}"))));
        Row("worker pid", vm.WorkerPid == 0 ? "-" : vm.WorkerPid.ToString(CultureInfo.InvariantCulture));
        Row("created", vm.CreatedAt?.ToDateTime().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "-");
        if (vm.StartedAt is not null) Row("started", vm.StartedAt.ToDateTime().ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture));
        if (vm.BootTimeMs > 0) Row("boot done", $"{vm.BootTimeMs:F1} ms");
        if (vm.Exit is not null) Row("exit", Markup.Escape($"{vm.Exit.Kind}: {vm.Exit.Reason}"));
        AnsiConsole.Write(grid);
    }

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
        _ => throw new ArgumentException($"--state {s}: not a state (created, running, paused, stopping, stopped, failed)"),
    };

    private static string FullPath(string p) => Path.GetFullPath(p);

    private static IEnumerable<(string, string)> ParseLabels(string[]? labels)
    {
        foreach (var l in labels ?? [])
        {
            int eq = l.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"--label {l}: expected key=value");
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

    private static DriveSpec ParseDrive(string text)
    {
        var kv = ParseKv(text, "--drive");
        var d = new DriveSpec
        {
            Id = kv.GetValueOrDefault("id", ""),
            Path = kv.TryGetValue("path", out var p) ? FullPath(p) : "",
            ReadOnly = kv.ContainsKey("ro"),
            Root = kv.ContainsKey("root"),
            RateLimiter = RateLimitOptions.Drive(kv, "--drive"),
        };
        foreach (var k in kv.Keys)
            if (k is not ("id" or "path" or "ro" or "root") && !RateLimitOptions.DriveKeys.Contains(k)) throw new ArgumentException($"--drive {text}: unknown key '{k}'");
        return d;
    }

    private static NetworkInterfaceSpec ParseNet(string text)
    {
        var kv = ParseKv(text, "--net");
        var n = new NetworkInterfaceSpec { Id = kv.GetValueOrDefault("id", ""), Mac = kv.GetValueOrDefault("mac", ""), Ip = kv.GetValueOrDefault("ip", "") };
        if (kv.TryGetValue("tap", out var tap))
        {
            if (tap == "auto") n.Auto = true;
            else n.Tap = tap;
        }
        if (kv.ContainsKey("auto")) n.Auto = true;
        (n.RxRateLimiter, n.TxRateLimiter) = RateLimitOptions.Net(kv, "--net");
        foreach (var k in kv.Keys)
            if (k is not ("id" or "tap" or "auto" or "mac" or "ip") && !RateLimitOptions.NetKeys.Contains(k)) throw new ArgumentException($"--net {text}: unknown key '{k}'");
        return n;
    }
}

/// <summary>A VM as <c>firesharp vm ... --json</c> prints it.</summary>
internal sealed record VmJson(
    string Id, string State, Dictionary<string, string> Labels, int Vcpus, long MemMib, string Kernel, string? Initrd, string? Cmdline,
    int WorkerPid, DateTime? CreatedAt, DateTime? StartedAt, double? BootTimeMs, string? ExitKind, string? ExitReason, bool? ExitClean)
{
    public static VmJson From(Vm vm) => new(
        vm.Id, VmClientCommands.Name(vm.State), vm.Labels.ToDictionary(StringComparer.Ordinal), vm.Spec.Machine.Vcpus, vm.Spec.Machine.MemMib,
        vm.Spec.Kernel.Path, vm.Spec.Kernel.InitrdPath is { Length: > 0 } i ? i : null, vm.Spec.Kernel.Cmdline is { Length: > 0 } c ? c : null,
        vm.WorkerPid, vm.CreatedAt?.ToDateTime(), vm.StartedAt?.ToDateTime(), vm.BootTimeMs > 0 ? vm.BootTimeMs : null,
        vm.Exit is null ? null : VmClientCommands.Name(vm.Exit.Kind), vm.Exit?.Reason, vm.Exit?.Clean);
}

/// <summary>An event as <c>firesharp vm events --json</c> prints it (one per line).</summary>
internal sealed record EventJson(string Type, string Id, string State, DateTime? Time, string Message, double? BootTimeMs, string? ExitKind, string? ExitReason, long? Dropped)
{
    public static EventJson From(VmEvent e) => new(
        VmClientCommands.Name(e.Type), e.Id, VmClientCommands.Name(e.State), e.Time?.ToDateTime(), e.Message,
        e.BootTimeMs > 0 ? e.BootTimeMs : null, e.Exit is null ? null : VmClientCommands.Name(e.Exit.Kind), e.Exit?.Reason, e.Dropped > 0 ? e.Dropped : null);
}

internal sealed record DeletedJson(string Deleted);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(VmJson))]
[JsonSerializable(typeof(List<VmJson>))]
[JsonSerializable(typeof(EventJson))]
[JsonSerializable(typeof(DeletedJson))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
