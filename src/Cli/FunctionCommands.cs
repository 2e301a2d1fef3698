// Over 400 lines: one System.CommandLine definition per `fn` subcommand (and the hidden bench); to be split
// per subcommand.
using System.CommandLine;
using System.Globalization;
using System.Text;
using FireSharp.Daemon;
using FireSharp.Daemon.Functions;
using FireSharp.Proto.V1;
using FireSharp.Cli.Args;
using FireSharp.Cli.Output;
using Google.Protobuf;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp fn create|update|invoke|ls|get|rm|concurrency|account</c>: functions through the daemon's
/// FunctionService, with the connection options, output and exit codes of <c>firesharp vm</c>. Paths are made
/// absolute here and are paths on the daemon's host.
/// </summary>
internal static class FunctionCommands
{
    public static Command Create()
    {
        var fn = new Command("fn", "manage and invoke functions (Lambda-style, on a warm pool of microVMs) through the FireSharp daemon");
        foreach (var o in DaemonClient.All) fn.Options.Add(o);
        fn.Subcommands.Add(CreateCommand());
        fn.Subcommands.Add(UpdateCommand());
        fn.Subcommands.Add(InvokeCommand());
        fn.Subcommands.Add(ListCommand());
        fn.Subcommands.Add(GetCommand());
        fn.Subcommands.Add(LogCommands.FunctionLogs());
        fn.Subcommands.Add(RemoveCommand());
        fn.Subcommands.Add(ConcurrencyCommand());
        fn.Subcommands.Add(AccountCommand());
        fn.Subcommands.Add(BenchCommand());
        return fn;
    }

    // ------------------------------------------------------------------ commands

    private static Command CreateCommand()
    {
        var name = new Argument<string>("name") { Description = "the function's name (1-64 of a-z, A-Z, 0-9, '-', '_')" };
        var code = new Option<string>("--code") { Description = "the code: an ext4 image, or a directory the daemon packs (mounted at /var/task)", Required = true };
        var handler = new Option<string>("--handler") { Description = "the handler (_HANDLER)", DefaultValueFactory = _ => "function.handler" };
        var kernel = new Option<string?>("--kernel") { Description = "guest kernel (default: the daemon's FunctionKernel)" };
        var rootfs = new Option<string?>("--rootfs") { Description = "guest root filesystem with the agent (default: the daemon's FunctionRootfs)" };
        var layers = new Option<string[]>("--layer") { Description = "an ext4 layer image, mounted under /opt (repeatable, at most 5)" };
        var env = new Option<string[]>("--env") { Description = "an environment variable KEY=VALUE (repeatable)" };
        var memory = new MemoryOption(128, "memory, 128M to 10G (a bare number is MiB)");
        var vcpus = new Option<int>("--vcpus") { Description = "vCPUs (default: 1 per 1769 MiB)" };
        var timeout = new Option<int>("--fn-timeout") { Description = "seconds an invocation may run (1-900)", DefaultValueFactory = _ => 3 };
        var snap = new Option<bool>("--snapshot-start") { Description = "snapshot the VM after init and start later VMs from it" };
        var command = new Command("create", "create a function") { name, code, handler, kernel, rootfs, layers, env, vcpus, timeout, snap };
        foreach (var o in memory.All) command.Options.Add(o);
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var spec = new FunctionSpec
            {
                Name = parse.GetValue(name)!,
                Code = Code(parse.GetValue(code)!),
                Handler = parse.GetValue(handler)!,
                MemoryMib = checked((int)memory.GetMib(parse)),
                Vcpus = parse.GetValue(vcpus),
                TimeoutSeconds = parse.GetValue(timeout),
                SnapshotStart = parse.GetValue(snap),
                Image = new FunctionImage
                {
                    KernelPath = parse.GetValue(kernel) is { } kp ? Path.GetFullPath(kp) : "",
                    RootfsPath = parse.GetValue(rootfs) is { } rp ? Path.GetFullPath(rp) : "",
                },
            };
            spec.Layers.AddRange((parse.GetValue(layers) ?? []).Select(Path.GetFullPath));
            foreach (var (k, v) in ParseEnv(parse.GetValue(env))) spec.Environment[k] = v;
            PrintFunction(parse, await client.CreateFunctionAsync(new CreateFunctionRequest { Spec = spec }, options));
        }, ct));
        return command;
    }

    private static Command UpdateCommand()
    {
        var name = new Argument<string>("name");
        var code = new Option<string?>("--code") { Description = "new code: an ext4 image or a directory" };
        var layers = new Option<string[]>("--layer") { Description = "replace the layers (repeatable)" };
        var handler = new Option<string?>("--handler");
        var env = new Option<string[]>("--env") { Description = "set an environment variable KEY=VALUE (repeatable; merged)" };
        var memory = new MemoryOption(0, "new memory: 512M, 1G, ... (a bare number is MiB)");
        var vcpus = new Option<int>("--vcpus");
        var timeout = new Option<int>("--fn-timeout") { Description = "seconds an invocation may run" };
        var snap = new Option<bool?>("--snapshot-start") { Description = "true or false" };
        var command = new Command("update", "change a function's code or configuration (a new version)") { name, code, layers, handler, env, vcpus, timeout, snap };
        foreach (var o in memory.All) command.Options.Add(o);
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            string fnName = parse.GetValue(name)!;
            Function? result = null;
            var newLayers = parse.GetValue(layers) ?? [];
            if (parse.GetValue(code) is { } c)
            {
                var request = new UpdateFunctionCodeRequest { Name = fnName, Code = Code(c), ReplaceLayers = newLayers.Length > 0 };
                request.Layers.AddRange(newLayers.Select(Path.GetFullPath));
                result = await client.UpdateFunctionCodeAsync(request, options);
            }
            else if (newLayers.Length > 0)
            {
                throw new UsageException("--layer needs --code (layers change with the code)", "firesharp fn update NAME --code DIR --layer IMAGE");
            }
            var config = new UpdateFunctionConfigurationRequest
            {
                Name = fnName,
                Handler = parse.GetValue(handler) ?? "",
                MemoryMib = checked((int)memory.GetMib(parse)),
                Vcpus = parse.GetValue(vcpus),
                TimeoutSeconds = parse.GetValue(timeout),
            };
            if (parse.GetValue(snap) is { } s) (config.SetSnapshotStart, config.SnapshotStartValue) = (true, s);
            foreach (var (k, v) in ParseEnv(parse.GetValue(env))) config.Environment[k] = v;
            bool anyConfig = config.Handler.Length > 0 || config.MemoryMib != 0 || config.Vcpus != 0 || config.TimeoutSeconds != 0
                || config.SetSnapshotStart || config.Environment.Count > 0;
            if (anyConfig) result = await client.UpdateFunctionConfigurationAsync(config, options);
            if (result is null) throw new UsageException("nothing to update: give --code or a configuration option", "firesharp fn update --help");
            PrintFunction(parse, result);
        }, ct));
        return command;
    }

    private static Command InvokeCommand()
    {
        var name = new Argument<string>("name");
        var payload = new Option<string?>("--payload") { Description = "the event (JSON); '-' or absent reads stdin when it is not a terminal" };
        var file = new Option<string?>("--payload-file") { Description = "read the event from a file" };
        var type = new Option<string>("--type") { Description = "RequestResponse, Event or DryRun", DefaultValueFactory = _ => "RequestResponse" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "print the invocation's figures and log tail to stderr" };
        var command = new Command("invoke", "invoke a function; the response goes to stdout, its figures to stderr") { name, payload, file, type, verbose };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            string? text = parse.GetValue(payload);
            byte[] data = parse.GetValue(file) is { } f ? await File.ReadAllBytesAsync(f, ct)
                : text is not null && text != "-" ? Encoding.UTF8.GetBytes(text)
                : text == "-" || Console.IsInputRedirected ? await ReadStdinAsync(ct)
                : "{}"u8.ToArray();
            var request = new InvokeRequest { Name = parse.GetValue(name)!, Payload = ByteString.CopyFrom(data), InvocationType = ParseType(parse.GetValue(type)!) };
            options = await Deadlines.InvokeAsync(parse, client, request.Name, options); // the function's timeout plus a cold start
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            var reply = await client.InvokeAsync(request, options);
            double roundTripMs = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            if (Printer.For(parse) is { IsStructured: true } printer)
            {
                printer.Message(reply, reply.RequestId, "");
            }
            else
            {
                using (var stdout = Console.OpenStandardOutput()) stdout.Write(reply.Payload.Span);
                if (reply.Payload.Length > 0 && reply.Payload.Span[^1] != (byte)'\n') Console.WriteLine();
            }
            var err = Console.Error;
            err.WriteLine(Summary(reply, roundTripMs));
            if (parse.GetValue(verbose) && reply.LogTail.Length > 0)
            {
                err.WriteLine("---- log tail ----");
                err.Write(reply.LogTail);
                if (!reply.LogTail.EndsWith('\n')) err.WriteLine();
            }
            if (reply.FunctionError.Length > 0) Environment.ExitCode = ExitCodes.Failed;
        }, ct));
        return command;
    }

    /// <summary>One line: the invocation's figures, as Lambda's REPORT line.</summary>
    internal static string Summary(InvokeResponse r, double roundTripMs) => string.Format(CultureInfo.InvariantCulture,
        "REPORT RequestId: {0}  Status: {1}{2}  Start: {3}{4}  Duration: {5:F2} ms  Billed Duration: {6} ms  Max Memory Used: {7} MB  GB-s: {8:F6}  Round trip: {9:F1} ms",
        r.RequestId, r.StatusCode, r.FunctionError.Length > 0 ? $" ({r.FunctionError}: {r.ErrorType})" : "", Name(r.StartKind),
        r.InitDurationMs > 0 ? string.Format(CultureInfo.InvariantCulture, "  Init Duration: {0:F2} ms", r.InitDurationMs) : "",
        r.DurationMs, r.BilledDurationMs, r.MaxMemoryUsedMib, r.GbSeconds, roundTripMs);

    private static Command ListCommand()
    {
        var command = new Command("ls", "list functions");
        command.Aliases.Add("list");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var list = (await client.ListFunctionsAsync(new ListFunctionsRequest(), options)).Functions;
            Printer.For(parse).List(list, f => f.Spec.Name, Columns);
        }, ct));
        return command;
    }

    private static Command GetCommand()
    {
        var name = new Argument<string>("name");
        var command = new Command("get", "show a function's configuration and statistics") { name };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
            PrintFunction(parse, await client.GetFunctionAsync(new GetFunctionRequest { Name = parse.GetValue(name)! }, options)), ct));
        return command;
    }

    private static Command RemoveCommand()
    {
        var name = new Argument<string>("name");
        var command = new Command("rm", "delete a function (running invocations finish first)") { name };
        command.Aliases.Add("delete");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var reply = await client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = parse.GetValue(name)! }, options);
            Printer.For(parse).Message(reply, reply.Name, $"deleted {reply.Name}");
        }, ct));
        return command;
    }

    private static Command ConcurrencyCommand()
    {
        var name = new Argument<string>("name");
        var reserved = new Option<int?>("--reserved") { Description = "reserved concurrency (a cap and a guarantee; 0 = never run)" };
        var removeReserved = new Option<bool>("--remove-reserved") { Description = "remove the reservation" };
        var provisioned = new Option<int?>("--provisioned") { Description = "VMs kept initialized (0 = none)" };
        var command = new Command("concurrency", "set a function's reserved and provisioned concurrency") { name, reserved, removeReserved, provisioned };
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            string fnName = parse.GetValue(name)!;
            Function? result = null;
            if (parse.GetValue(removeReserved))
                result = await client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = fnName, Remove = true }, options);
            else if (parse.GetValue(reserved) is { } r)
                result = await client.PutFunctionConcurrencyAsync(new PutFunctionConcurrencyRequest { Name = fnName, ReservedConcurrentExecutions = r }, options);
            if (parse.GetValue(provisioned) is { } p)
                result = await client.PutProvisionedConcurrencyAsync(new PutProvisionedConcurrencyRequest { Name = fnName, ProvisionedConcurrentExecutions = p }, options);
            result ??= await client.GetFunctionAsync(new GetFunctionRequest { Name = fnName }, options);
            PrintFunction(parse, result);
        }, ct));
        return command;
    }

    private static Command AccountCommand()
    {
        var command = new Command("account", "the account-wide concurrency limit and its use");
        command.SetAction((parse, ct) => CallAsync(parse, async (client, options) =>
        {
            var a = await client.GetAccountSettingsAsync(new GetAccountSettingsRequest(), options);
            Printer.For(parse).Message(a, "account", string.Format(CultureInfo.InvariantCulture,
                "concurrency limit {0}, unreserved {1}, running {2}; {3} functions, {4} VMs",
                a.ConcurrentExecutionsLimit, a.UnreservedConcurrentExecutions, a.ConcurrentExecutions, a.FunctionCount, a.TotalVms));
        }, ct));
        return command;
    }


    /// <summary>
    /// Hidden: <c>make bench-fn</c>. Warm-invoke host overhead (client round trip minus the in-guest duration, p50/p99)
    /// and cold starts, boot against snapshot (client round trip and init duration). Creates and deletes its functions.
    /// </summary>
    private static Command BenchCommand()
    {
        var code = new Option<string>("--code") { Description = "code image or directory (the shell sample)", Required = true };
        var warm = new Option<int>("--warm") { DefaultValueFactory = _ => 200 };
        var cold = new Option<int>("--cold") { Description = "samples of each cold-start kind", DefaultValueFactory = _ => 3 };
        var label = new Option<string>("--label") { DefaultValueFactory = _ => Directory.Exists("/sys/module/kvm_pvm") ? "PVM (guest kernel emulated)" : "KVM" };
        var traceFile = new Option<string?>("--trace-file") { Description = "the daemon's TraceFile: break warm invocations down by its spans (P7)" };
        var csharpCode = new Option<string?>("--csharp-code") { Description = "the C# example's code image: its warm invocations too" };
        var csharpWarm = new Option<int>("--csharp-warm") { DefaultValueFactory = _ => 100 };
        var command = new Command("bench", "function invoke overhead and cold starts") { code, warm, cold, label, traceFile, csharpCode, csharpWarm };
        command.Hidden = true;
        command.SetAction((parse, ct) => CallAsync(parse, async (client, _) =>
        {
            var codeSpec = Code(parse.GetValue(code)!);
            string host = parse.GetValue(label)!;
            int coldN = Math.Max(1, parse.GetValue(cold));
            async Task<(InvokeResponse Reply, double RoundTripMs)> Invoke(string name, string payload, string? traceparent = null)
            {
                var headers = traceparent is null ? null : new Metadata { { "traceparent", traceparent } };
                long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                var r = await client.InvokeAsync(new InvokeRequest { Name = name, Payload = ByteString.CopyFromUtf8(payload) }, headers, deadline: DateTime.UtcNow.AddMinutes(10), cancellationToken: ct);
                return (r, System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
            async Task Recreate(string name, bool snapshot, FunctionCode? functionCode = null)
            {
                try { await client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = name }, cancellationToken: ct); }
                catch (RpcException e) when (e.StatusCode == StatusCode.NotFound) { }
                await client.CreateFunctionAsync(new CreateFunctionRequest { Spec = new FunctionSpec { Name = name, Code = functionCode ?? codeSpec, Handler = "function.handler", TimeoutSeconds = 600, SnapshotStart = snapshot } }, cancellationToken: ct);
            }
            // Warm invocations of one function, each with a client span of its own (for the daemon's spans).
            async Task<List<FunctionBenchReport.Sample>> Warm(string name, int n)
            {
                var samples = new List<FunctionBenchReport.Sample>(n);
                for (int i = 0; i < 5; i++) await Invoke(name, "{}");
                for (int i = 0; i < n; i++)
                {
                    var (trace, traceparent) = FunctionBenchReport.NewTrace();
                    var (r, rt) = await Invoke(name, "{}", traceparent);
                    if (r.StartKind != StartKind.Warm) Console.Error.WriteLine($"{name}: warm sample {i} was {Name(r.StartKind)}");
                    if (r.FunctionError.Length > 0) throw new InvalidOperationException($"{name} failed: {r.ErrorType} {r.Payload.ToStringUtf8()} {r.LogTail}");
                    samples.Add(new FunctionBenchReport.Sample(trace, rt));
                }
                return samples;
            }
            var boot = new List<(double Rt, double Init)>();
            var snap = new List<(double Rt, double Init)>();
            try
            {
                // Boot cold starts: a fresh function each time (no VM, no snapshot).
                for (int i = 0; i < coldN; i++)
                {
                    await Recreate("bench-boot", snapshot: false);
                    var (r, rt) = await Invoke("bench-boot", "{}");
                    if (r.FunctionError.Length > 0) throw new InvalidOperationException($"bench-boot failed: {r.ErrorType} {r.Payload.ToStringUtf8()} {r.LogTail}");
                    boot.Add((rt, r.InitDurationMs));
                    Console.Error.WriteLine($"boot cold {i + 1}/{coldN}: round trip {rt:F0} ms, init {r.InitDurationMs:F0} ms ({Name(r.StartKind)})");
                }
                // Warm: the VM of the last boot.
                var overhead = new double[parse.GetValue(warm)];
                var roundTrips = new double[overhead.Length];
                for (int i = 0; i < 5; i++) await Invoke("bench-boot", "{}");
                for (int i = 0; i < overhead.Length; i++)
                {
                    var (r, rt) = await Invoke("bench-boot", "{}");
                    if (r.StartKind != StartKind.Warm) Console.Error.WriteLine($"warm sample {i} was {Name(r.StartKind)}");
                    roundTrips[i] = rt;
                    overhead[i] = rt - r.DurationMs;
                }
                Array.Sort(overhead);
                Array.Sort(roundTrips);
                // P7: the same, traced, for the shell sample and the C# example.
                var traced = new List<(string Title, List<FunctionBenchReport.Sample> Samples)>();
                if (parse.GetValue(traceFile) is not null)
                {
                    traced.Add(("shell sample, 128 MiB", await Warm("bench-boot", overhead.Length)));
                    if (parse.GetValue(csharpCode) is { } cs)
                    {
                        await Recreate("bench-cs", snapshot: false, Code(cs));
                        var (first, firstRt) = await Invoke("bench-cs", "{}");
                        if (first.FunctionError.Length > 0) throw new InvalidOperationException($"bench-cs failed: {first.ErrorType} {first.Payload.ToStringUtf8()} {first.LogTail}");
                        Console.Error.WriteLine($"C# example: boot cold start {firstRt:F0} ms");
                        traced.Add(("C# example (NativeAOT), 128 MiB", await Warm("bench-cs", Math.Max(1, parse.GetValue(csharpWarm)))));
                        await client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = "bench-cs" }, cancellationToken: ct);
                    }
                }

                // Snapshot cold starts: the first invoke boots and snapshots; then each round runs one more invocation
                // at once than there are idle VMs, so one of them gets a new VM restored from the snapshot.
                await Recreate("bench-snap", snapshot: true);
                await Invoke("bench-snap", "{}");
                for (int round = 1; snap.Count < coldN && round <= coldN * 3; round++)
                {
                    var calls = Enumerable.Range(0, round + 1).Select(_ => Invoke("bench-snap", "{}")).ToList();
                    foreach (var (r, rt) in await Task.WhenAll(calls))
                        if (r.StartKind == StartKind.SnapshotCold) { snap.Add((rt, r.InitDurationMs)); Console.Error.WriteLine($"snapshot cold {snap.Count}: round trip {rt:F0} ms, init {r.InitDurationMs:F0} ms"); }
                        else if (r.StartKind == StartKind.BootCold) Console.Error.WriteLine($"round {round}: a boot cold start instead of a snapshot one (the restore failed or no snapshot yet; see the daemon log)");
                }

                string P(double[] a, int p) => a.Length == 0 ? "-" : a[Math.Min(a.Length - 1, (int)Math.Ceiling(p / 100.0 * a.Length) - 1)].ToString("F2", CultureInfo.InvariantCulture);
                double Med(IEnumerable<double> xs) { var a = xs.Order().ToArray(); return a.Length == 0 ? double.NaN : a[a.Length / 2]; }
                Console.WriteLine($"## Functions on {host}");
                Console.WriteLine();
                Console.WriteLine($"Warm invoke, x{overhead.Length} (shell sample, 128 MiB):");
                Console.WriteLine($"  host overhead (round trip - in-guest duration): p50 {P(overhead, 50)} ms  p99 {P(overhead, 99)} ms");
                Console.WriteLine($"  client round trip:                              p50 {P(roundTrips, 50)} ms  p99 {P(roundTrips, 99)} ms");
                Console.WriteLine();
                Console.WriteLine("| cold start | n | round trip p50 (ms) | init duration p50 (ms) |");
                Console.WriteLine("|---|---|---|---|");
                Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "| boot     | {0} | {1:F0} | {2:F0} |", boot.Count, Med(boot.Select(b => b.Rt)), Med(boot.Select(b => b.Init))));
                Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "| snapshot | {0} | {1:F0} | {2:F0} |", snap.Count, Med(snap.Select(b => b.Rt)), Med(snap.Select(b => b.Init))));
                if (snap.Count > 0 && boot.Count > 0)
                    Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "snapshot start is {0:F1}x faster than a boot (round trip), {1:F1}x (init duration); warm is {2:F0}x faster than a snapshot cold start",
                        Med(boot.Select(b => b.Rt)) / Med(snap.Select(b => b.Rt)), Med(boot.Select(b => b.Init)) / Med(snap.Select(b => b.Init)),
                        Med(snap.Select(b => b.Rt)) / Med(roundTrips)));
                if (parse.GetValue(traceFile) is { } spansFile)
                {
                    await Task.Delay(TimeSpan.FromSeconds(3), ct); // the daemon writes its spans in batches, every second
                    var spans = FunctionBenchReport.ReadSpans(spansFile);
                    foreach (var (title, samples) in traced) FunctionBenchReport.Print(title, samples, spans);
                }
            }
            finally
            {
                foreach (var name in (string[])["bench-boot", "bench-snap", "bench-cs"])
                    try { await client.DeleteFunctionAsync(new DeleteFunctionRequest { Name = name }, cancellationToken: CancellationToken.None); }
                    catch (RpcException) { }
            }
        }, ct));
        return command;
    }

    // ------------------------------------------------------------------ plumbing

    /// <summary>As <c>firesharp vm</c>'s (<see cref="DaemonClient.CallAsync"/>), with a throttle's retry-after in the message.</summary>
    private static Task<int> CallAsync(ParseResult parse, Func<FunctionService.FunctionServiceClient, CallOptions, Task> body, CancellationToken ct) =>
        DaemonClient.CallAsync(parse, invoker => new FunctionService.FunctionServiceClient(invoker), body, ct,
            retryAfter: e => e.Trailers.GetValue(FunctionErrors.RetryAfterTrailer));

    /// <summary>The columns of <c>fn ls</c> (WideOnly: <c>-o wide</c>).</summary>
    private static readonly Column<Function>[] Columns =
    [
        new("NAME", f => f.Spec.Name),
        new("STATE", f => Name(f.State)),
        new("MEM", f => $"{f.Spec.MemoryMib}M"),
        new("TIMEOUT", f => $"{f.Spec.TimeoutSeconds}s"),
        new("VERSION", f => f.Version),
        new("RESERVED", f => f.HasReservedConcurrency ? Num(f.ReservedConcurrency) : "-"),
        new("PROVISIONED", f => Num(f.ProvisionedConcurrency)),
        new("BUSY", f => Num(f.Stats?.ConcurrentExecutions ?? 0)),
        new("IDLE", f => Num(f.Stats?.IdleVms ?? 0)),
        new("CALLS", f => (f.Stats?.Invocations ?? 0).ToString(CultureInfo.InvariantCulture)),
        new("ERRORS", f => (f.Stats?.Errors ?? 0).ToString(CultureInfo.InvariantCulture), WideOnly: true),
        new("THROTTLES", f => (f.Stats?.Throttles ?? 0).ToString(CultureInfo.InvariantCulture), WideOnly: true),
        new("VCPUS", f => Num(f.Spec.Vcpus), WideOnly: true),
        new("HANDLER", f => f.Spec.Handler, WideOnly: true),
        new("SNAPSTART", f => f.Spec.SnapshotStart ? "yes" : "no"),
    ];

    private static void PrintFunction(ParseResult parse, Function f) => Printer.For(parse).Item(f, f.Spec.Name, d =>
    {
        var s = f.Spec;
        d.Row("name", s.Name);
        d.Row("arn", f.Arn);
        d.Row("state", Name(f.State));
        d.Row("version", f.Version);
        d.Row("handler", s.Handler);
        d.Row("machine", $"{s.MemoryMib} MiB, {s.Vcpus} vCPU, timeout {s.TimeoutSeconds} s");
        d.Row("image", $"{s.Image?.KernelPath} + {s.Image?.RootfsPath}");
        d.Row("code", s.Code?.ImagePath + (f.CodeSourceDirectory.Length > 0 ? $" (packed from {f.CodeSourceDirectory})" : ""));
        if (s.Layers.Count > 0) d.Row("layers", string.Join(", ", s.Layers));
        if (s.Environment.Count > 0) d.Row("environment", string.Join(" ", s.Environment.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => $"{e.Key}={e.Value}")));
        d.Row("snapshot start", s.SnapshotStart ? "yes" : "no");
        d.Row("concurrency", $"reserved {(f.HasReservedConcurrency ? Num(f.ReservedConcurrency) : "-")}, provisioned {f.ProvisionedConcurrency}");
        if (f.Stats is { } st)
            d.Row("stats", string.Format(CultureInfo.InvariantCulture,
                "{0} running, {1} idle, {2} VMs; {3} invocations ({4} errors, {5} throttled); starts: {6} warm, {7} snapshot, {8} boot; {9:F4} GB-s",
                st.ConcurrentExecutions, st.IdleVms, st.TotalVms, st.Invocations, st.Errors, st.Throttles, st.WarmStarts, st.SnapshotColdStarts, st.BootColdStarts, st.GbSeconds));
    });

    private static FunctionCode Code(string path)
    {
        string full = Path.GetFullPath(path);
        return Directory.Exists(full) ? new FunctionCode { Directory = full } : new FunctionCode { ImagePath = full };
    }

    private static IEnumerable<(string, string)> ParseEnv(string[]? env)
    {
        foreach (var e in env ?? [])
        {
            int eq = e.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0) throw new UsageException($"--env {e}: expected KEY=VALUE", "--env KEY=VALUE");
            yield return (e[..eq], e[(eq + 1)..]);
        }
    }

    private static InvocationType ParseType(string s) => s.ToLowerInvariant() switch
    {
        "requestresponse" or "request-response" or "sync" => InvocationType.RequestResponse,
        "event" or "async" => InvocationType.Event,
        "dryrun" or "dry-run" => InvocationType.DryRun,
        _ => throw new UsageException($"--type {s}: not an invocation type", "--type RequestResponse|Event|DryRun"),
    };

    private static async Task<byte[]> ReadStdinAsync(CancellationToken ct)
    {
        using var stdin = Console.OpenStandardInput();
        using var ms = new MemoryStream();
        await stdin.CopyToAsync(ms, ct);
        return ms.ToArray();
    }

    internal static string Name(StartKind k) => k switch
    {
        StartKind.Warm => "warm", StartKind.SnapshotCold => "snapshot-cold", StartKind.BootCold => "boot-cold", _ => "-",
    };

    private static string Name(FunctionState s) => s switch
    {
        FunctionState.Active => "active", FunctionState.Deleting => "deleting", _ => "unspecified",
    };

    private static string Num(int n) => n.ToString(CultureInfo.InvariantCulture);
}
