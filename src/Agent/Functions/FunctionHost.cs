// Over 400 lines: one function lifecycle (init, invoke, shutdown, extensions) whose states share one lock;
// FunctionSession and RuntimeProcess already hold the per-process parts.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using FireSharp.Agent.Processes;
using FireSharp.Proto.Agent;
using Google.Protobuf;
using Tmds.Linux;

namespace FireSharp.Agent.Functions;

/// <summary>An agent-level failure of a function request (answered with an agent Error, not a reply).</summary>
internal sealed class FunctionRequestException(ErrorCode code, string message) : Exception(message)
{
    public ErrorCode Code { get; } = code;
}

/// <summary>
/// The agent's function support (agent.proto FunctionInit / Invoke / FunctionShutdown): one
/// function at a time. Requests are serialized; the Runtime API server runs only once a function
/// was initialized.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001",
    Justification = "One per agent process (AgentContext makes it on first use) that lives until the guest ends; _gate's wait handle is never created.")]
internal sealed class FunctionHost(ChildReaper reaper)
{
    public const int DefaultRuntimeApiPort = 9001;
    public const string DefaultTaskRoot = "/var/task";
    public const string DefaultOptDir = "/opt";
    public const string RuntimeDir = "/var/runtime";
    public const uint DefaultInitTimeoutMs = 10_000;
    public const uint DefaultShutdownDeadlineMs = 2_000;
    /// <summary>How long the runtime has after SIGTERM before SIGKILL (Lambda: 500 ms).</summary>
    private static readonly TimeSpan RuntimeTermGrace = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan ExitWait = TimeSpan.FromSeconds(3);

    // Variables of the Lambda environment that the function's own env cannot replace.
    private static readonly string[] Reserved =
    [
        "AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_INITIALIZATION_TYPE",
    ];

    private readonly SemaphoreSlim _gate = new(1, 1);
    private RuntimeApiServer? _server;
    private volatile FunctionSession? _session;

    /// <summary>The function currently initialized (or initializing), if any.</summary>
    public FunctionSession? Session => _session;

    public async Task<FunctionInitReply> InitAsync(FunctionInitRequest request, CancellationToken cancellationToken)
    {
        if (request.Env.Keys.FirstOrDefault(k => k.Length == 0 || k.Contains('=') || k.Contains('\0')) is { } badKey)
            throw new FunctionRequestException(ErrorCode.InvalidArgument, $"environment variable name '{badKey}' is empty or contains '=' or NUL");
        if (request.RuntimeApiPort > 65535)
            throw new FunctionRequestException(ErrorCode.InvalidArgument, $"runtime_api_port {request.RuntimeApiPort} is not a TCP port");

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            long started = Stopwatch.GetTimestamp();
            if (_session is not null) await StopSessionAsync(_session, "spindown", TimeSpan.Zero).ConfigureAwait(false);

            int port = request.RuntimeApiPort == 0 ? DefaultRuntimeApiPort : (int)request.RuntimeApiPort;
            if (_server is not null && _server.Port != port)
            {
                await _server.DisposeAsync().ConfigureAwait(false);
                _server = null;
            }
            if (_server is null) await EnsureLoopbackUpAsync().ConfigureAwait(false);
            try
            {
                if (_server is null)
                {
                    long serverStart = Stopwatch.GetTimestamp();
                    _server = await RuntimeApiServer.StartAsync(port, () => _session).ConfigureAwait(false);
                    Log.Info($"Runtime API listening on 127.0.0.1:{port} ({Stopwatch.GetElapsedTime(serverStart).TotalMilliseconds:F0} ms)");
                }
            }
            catch (IOException e)
            {
                throw new FunctionRequestException(ErrorCode.IoError, e.Message);
            }

            var session = new FunctionSession(request);
            _session = session;
            try
            {
                return await InitSessionAsync(session, request, port, started, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                await StopSessionAsync(session, "failure", TimeSpan.Zero).ConfigureAwait(false);
                throw;
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<FunctionInitReply> InitSessionAsync(FunctionSession session, FunctionInitRequest request, int port, long started, CancellationToken cancellationToken)
    {
        {
            string taskRoot = request.TaskRoot.Length == 0 ? DefaultTaskRoot : request.TaskRoot;
            string optDir = request.OptDir.Length == 0 ? DefaultOptDir : request.OptDir;

            FunctionInitReply Fail(string type, string message)
            {
                Log.Info($"function {request.FunctionName}: init failed: {type}: {message}");
                return new FunctionInitReply
                {
                    Ok = false,
                    ErrorType = type,
                    ErrorMessage = message,
                    LogTail = session.Tail.ToString(),
                    InitDurationUs = Micros(started),
                };
            }

            var candidates = new[] { Path.Combine(taskRoot, "bootstrap"), Path.Combine(optDir, "bootstrap") };
            var bootstrap = candidates.FirstOrDefault(IsExecutableFile);
            if (bootstrap is null)
            {
                session.EndInit();
                return Fail("Runtime.InvalidEntrypoint", $"Couldn't find valid bootstrap(s): [{string.Join(' ', candidates)}]");
            }

            var env = LambdaEnvironment(request, port, taskRoot);
            var timeout = TimeSpan.FromMilliseconds(request.InitTimeoutMs == 0 ? DefaultInitTimeoutMs : request.InitTimeoutMs);
            using var initTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            initTimeout.CancelAfter(timeout);
            var timedOut = Task.Delay(Timeout.Infinite, initTimeout.Token);

            // Extensions first; the runtime starts once each has registered (or exited).
            foreach (var path in ExtensionFiles(Path.Combine(optDir, "extensions")))
            {
                try
                {
                    var p = ProcessSpawner.Spawn(reaper, [path], env, taskRoot);
                    session.ExtensionProcesses.Add(new RuntimeProcess(Path.GetFileName(path), p, session.Tail));
                }
                catch (SpawnException e)
                {
                    await StopSessionAsync(session, "failure", TimeSpan.Zero).ConfigureAwait(false);
                    return Fail("Extension.LaunchError", $"{path}: {e.Message}");
                }
            }
            while (session.ExtensionProcesses.Count(p => !p.HasExited) > session.Extensions.Count && !timedOut.IsCompleted && !session.InitFailed.IsCompleted)
                await Task.WhenAny(Task.Delay(5, CancellationToken.None), timedOut).ConfigureAwait(false);

            if (!timedOut.IsCompleted && !session.InitFailed.IsCompleted)
            {
                try
                {
                    var p = ProcessSpawner.Spawn(reaper, [bootstrap], env, taskRoot);
                    session.Runtime = new RuntimeProcess("runtime", p, session.Tail);
                    Log.Debug($"function {request.FunctionName}: {bootstrap} started (pid {p.Pid})");
                }
                catch (SpawnException e)
                {
                    session.EndInit();
                    await StopSessionAsync(session, "failure", TimeSpan.Zero).ConfigureAwait(false);
                    return Fail("Runtime.InvalidEntrypoint", $"{bootstrap}: {e.Message}");
                }
            }

            Task runtimeExited = session.Runtime?.Exited ?? Task.CompletedTask;
            await Task.WhenAny(session.InitDone, session.InitFailed, runtimeExited, timedOut).ConfigureAwait(false);
            session.EndInit();
            cancellationToken.ThrowIfCancellationRequested();

            if (session.InitDone.IsCompleted && !session.InitFailed.IsCompleted && !runtimeExited.IsCompleted)
            {
                var reply = new FunctionInitReply { Ok = true, InitDurationUs = Micros(started), LogTail = session.Tail.ToString() };
                reply.Extensions.AddRange(session.Extensions.Select(e => e.Name));
                Log.Info($"function {request.FunctionName}: initialized in {reply.InitDurationUs / 1000.0:F1} ms");
                return reply;
            }

            (string type, string message) = session.InitFailed.IsCompleted ? session.InitFailed.Result
                : runtimeExited.IsCompleted && session.Runtime is { } rt ? ("Runtime.ExitError", $"Runtime exited with error: {Describe(rt.Exited.Result)}")
                : ("Sandbox.Timedout", $"Init phase timed out after {timeout.TotalSeconds:0.##} seconds");
            if (session.Runtime is { } failedRuntime) await failedRuntime.DrainAsync(TimeSpan.FromMilliseconds(200)).ConfigureAwait(false);
            var failed = Fail(type, message);
            await StopSessionAsync(session, "failure", TimeSpan.Zero).ConfigureAwait(false);
            return failed;
        }
    }

    /// <param name="receivedAt">Stopwatch timestamp of when the request's frame was read (for <see cref="GuestTimings"/>).</param>
    public async Task<InvokeReply> InvokeAsync(InvokeRequest request, long receivedAt, CancellationToken cancellationToken)
    {
        if (request.RequestId.Length == 0)
            throw new FunctionRequestException(ErrorCode.InvalidArgument, "request_id is empty");
        if (request.Payload.Length > FunctionSession.MaxResponseBytes)
            throw new FunctionRequestException(ErrorCode.InvalidArgument, $"the payload is larger than {FunctionSession.MaxResponseBytes} bytes");

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var session = _session;
            if (session is null || session.Initializing)
                throw new FunctionRequestException(ErrorCode.InvalidArgument, "no function is initialized (FunctionInit first)");
            if (session.WasUsed(request.RequestId))
                throw new FunctionRequestException(ErrorCode.InvalidArgument, $"request id '{request.RequestId}' was used already");
            var runtime = session.Runtime!;
            long started = Stopwatch.GetTimestamp();
            session.Tail.Clear();
            Invocation? invocation = null;

            InvokeReply Reply(InvocationAnswer a) => new()
            {
                Status = a.Status,
                Payload = ByteString.CopyFrom(a.Payload),
                ErrorType = a.ErrorType,
                Unhandled = a.Unhandled,
                LogTail = session.Tail.ToString(),
                DurationUs = Micros(started),
                Timings = Timings(receivedAt, invocation),
            };

            if (runtime.HasExited)
            {
                var exited = ExitAnswer(request.RequestId, runtime);
                return Reply(exited);
            }

            // A relative budget wins over the absolute deadline (the guest's clock may be off); the
            // runtime then sees a deadline by the guest's clock.
            TimeSpan? budget = null;
            if (request.TimeoutMs > 0)
            {
                budget = TimeSpan.FromMilliseconds(request.TimeoutMs);
                request = request.Clone();
                request.DeadlineUnixMs = (ulong)DateTimeOffset.UtcNow.Add(budget.Value).ToUnixTimeMilliseconds();
            }
            else if (request.DeadlineUnixMs > 0)
            {
                budget = TimeSpan.FromMilliseconds(Math.Max(0, (long)request.DeadlineUnixMs - DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));
            }

            invocation = new Invocation(request);
            session.Begin(invocation);
            try
            {
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                Task deadline = Task.Delay(budget ?? Timeout.InfiniteTimeSpan, stop.Token);
                await Task.WhenAny(invocation.Answer.Task, runtime.Exited, deadline).ConfigureAwait(false);
                stop.Cancel();
                cancellationToken.ThrowIfCancellationRequested();

                InvocationAnswer answer;
                ulong memoryKib = runtime.HasExited ? 0 : runtime.MemoryKib();
                if (invocation.Answer.Task.IsCompleted)
                {
                    answer = invocation.Answer.Task.Result;
                }
                else if (runtime.HasExited)
                {
                    answer = ExitAnswer(request.RequestId, runtime);
                }
                else
                {
                    memoryKib = runtime.MemoryKib();
                    await runtime.KillAsync(ExitWait).ConfigureAwait(false);
                    double seconds = (budget ?? TimeSpan.Zero).TotalSeconds;
                    var message = $"RequestId: {request.RequestId} Error: Task timed out after {seconds.ToString("0.00", CultureInfo.InvariantCulture)} seconds";
                    answer = new InvocationAnswer(InvokeStatus.Timeout, FunctionJson.Error("Sandbox.Timedout", message), "Sandbox.Timedout", true);
                    Log.Info($"function {session.Config.FunctionName}: invocation {request.RequestId} timed out; runtime killed");
                }

                await runtime.DrainAsync(TimeSpan.FromMilliseconds(500)).ConfigureAwait(false);
                var reply = Reply(answer);
                reply.MaxMemoryKib = memoryKib;
                return reply;
            }
            finally
            {
                session.End(invocation);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The request's phases by the guest's clock, up to now (the reply is built last). An invocation the runtime never
    /// received (or never answered) counts its missing phases as zero, and the rest as the agent's.
    /// </summary>
    private static GuestTimings Timings(long receivedAt, Invocation? invocation)
    {
        long now = Stopwatch.GetTimestamp();
        long handoff = invocation?.DeliveredAt is > 0 and var d ? d : now;
        long answer = invocation?.AnsweredAt is > 0 and var a && a >= handoff ? a : handoff;
        static ulong Us(long from, long to) => to > from ? (ulong)Stopwatch.GetElapsedTime(from, to).Ticks / 10 : 0;
        return new GuestTimings
        {
            ReceiveToHandoffUs = Us(receivedAt, handoff),
            HandoffToAnswerUs = Us(handoff, answer),
            AnswerToReplyUs = Us(answer, now),
            InVmUs = Us(receivedAt, now),
        };
    }

    public async Task<FunctionShutdownReply> ShutdownAsync(FunctionShutdownRequest request, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            long started = Stopwatch.GetTimestamp();
            uint killed = 0;
            if (_session is { } session)
            {
                var deadline = TimeSpan.FromMilliseconds(request.DeadlineMs == 0 ? DefaultShutdownDeadlineMs : request.DeadlineMs);
                killed = await StopSessionAsync(session, request.Reason.Length == 0 ? "spindown" : request.Reason, deadline).ConfigureAwait(false);
            }
            if (_server is not null)
            {
                await _server.DisposeAsync().ConfigureAwait(false);
                _server = null;
            }
            return new FunctionShutdownReply { DurationUs = Micros(started), Killed = killed };
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The agent stops: end the function's processes quickly.</summary>
    public async Task StopAllAsync()
    {
        if (_session is { } session) await StopSessionAsync(session, "spindown", TimeSpan.FromMilliseconds(500)).ConfigureAwait(false);
    }

    /// <summary>
    /// SHUTDOWN to the extensions, SIGTERM to the runtime (SIGKILL after 500 ms), then SIGKILL to
    /// whatever still runs after <paramref name="deadline"/>. Returns how many had to be killed.
    /// </summary>
    private async Task<uint> StopSessionAsync(FunctionSession session, string reason, TimeSpan deadline)
    {
        session.EndInit();
        var until = DateTime.UtcNow + deadline;
        session.SendShutdown(reason, DateTimeOffset.UtcNow.Add(deadline).ToUnixTimeMilliseconds());
        uint killed = 0;
        if (session.Runtime is { } runtime)
        {
            if (!runtime.HasExited && deadline > TimeSpan.Zero)
            {
                runtime.Signal(LibC.SIGTERM);
                await runtime.WaitExitAsync(deadline < RuntimeTermGrace ? deadline : RuntimeTermGrace).ConfigureAwait(false);
            }
            if (!runtime.HasExited) killed++;
            await runtime.KillAsync(ExitWait).ConfigureAwait(false);
        }
        // Extensions that did not register for SHUTDOWN get SIGTERM now; the others have until the deadline.
        var registered = session.Extensions.Where(e => e.WantsShutdown).Select(e => e.Name).ToHashSet();
        foreach (var p in session.ExtensionProcesses)
            if (!registered.Contains(p.Name) && deadline > TimeSpan.Zero) p.Signal(LibC.SIGTERM);
        while (session.ExtensionProcesses.Any(p => !p.HasExited) && DateTime.UtcNow < until)
            await Task.Delay(5).ConfigureAwait(false);
        foreach (var p in session.ExtensionProcesses)
        {
            if (!p.HasExited) killed++;
            await p.KillAsync(ExitWait).ConfigureAwait(false);
        }
        session.Runtime?.Dispose();
        foreach (var p in session.ExtensionProcesses) p.Dispose();
        if (_session == session) _session = null;
        return killed;
    }

    /// <summary>
    /// The Runtime API is on 127.0.0.1, so the loopback interface must be up. The guest brings it
    /// up only with firesharp.ip=; a function VM without a network has it down.
    /// </summary>
    private async Task EnsureLoopbackUpAsync()
    {
        if (Loopback.EnsureUp(out var error)) return;
        Log.Error(error + "; trying ip link set lo up");
        try
        {
            var (status, text) = await CommandRunner.RunAsync(reaper, ["ip", "link", "set", "lo", "up"], TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            if (status.ExitCode != 0) Log.Error($"ip link set lo up: {status} {text}");
        }
        catch (SpawnException e)
        {
            Log.Error($"ip link set lo up: {e.Message}");
        }
    }

    private static InvocationAnswer ExitAnswer(string requestId, RuntimeProcess runtime)
    {
        var status = runtime.Exited.Result;
        if (status.Signal == LibC.SIGKILL && !runtime.KilledByAgent)
        {
            var oom = $"RequestId: {requestId} Error: Runtime exited with error: signal: killed (out of memory?)";
            return new InvocationAnswer(InvokeStatus.OutOfMemory, FunctionJson.Error("Runtime.OutOfMemory", oom), "Runtime.OutOfMemory", true);
        }
        var message = $"RequestId: {requestId} Error: Runtime exited with error: {Describe(status)}";
        return new InvocationAnswer(InvokeStatus.RuntimeExited, FunctionJson.Error("Runtime.ExitError", message), "Runtime.ExitError", true);
    }

    private static string Describe(ExitStatus status) =>
        status.ExitCode is { } code ? $"exit status {code}" : $"signal {status.Signal}";

    private static List<string> LambdaEnvironment(FunctionInitRequest request, int port, string taskRoot)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["PATH"] = "/usr/local/bin:/usr/bin:/bin:/opt/bin",
            ["LD_LIBRARY_PATH"] = $"/lib64:/usr/lib64:{RuntimeDir}:{RuntimeDir}/lib:{taskRoot}:{taskRoot}/lib:/opt/lib",
            ["LANG"] = "en_US.UTF-8",
            ["TZ"] = ":UTC",
            ["AWS_LAMBDA_LOG_GROUP_NAME"] = "/aws/lambda/" + request.FunctionName,
            ["AWS_LAMBDA_LOG_STREAM_NAME"] = "firesharp",
        };
        // The host may give the guest glibc tunables on the kernel command line (FireSharp does on PVM hosts,
        // see docs/pvm.md); /init's children inherit them, and so must the function's processes.
        if (Environment.GetEnvironmentVariable("GLIBC_TUNABLES") is { Length: > 0 } tunables) env["GLIBC_TUNABLES"] = tunables;
        foreach (var (k, v) in request.Env)
            if (!Reserved.Contains(k)) env[k] = v;
        env["AWS_LAMBDA_RUNTIME_API"] = $"127.0.0.1:{port}";
        env["_HANDLER"] = request.Handler;
        env["LAMBDA_TASK_ROOT"] = taskRoot;
        env["LAMBDA_RUNTIME_DIR"] = RuntimeDir;
        env["AWS_LAMBDA_FUNCTION_NAME"] = request.FunctionName;
        env["AWS_LAMBDA_FUNCTION_VERSION"] = request.FunctionVersion.Length == 0 ? "$LATEST" : request.FunctionVersion;
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = (request.MemoryMib == 0 ? 128 : request.MemoryMib).ToString(CultureInfo.InvariantCulture);
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "on-demand";
        return env.Select(kv => $"{kv.Key}={kv.Value}").ToList();
    }

    private static IEnumerable<string> ExtensionFiles(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        return Directory.GetFiles(dir).Where(IsExecutableFile).Order(StringComparer.Ordinal);
    }

    private static unsafe bool IsExecutableFile(string path)
    {
        if (!File.Exists(path)) return false;
        var p = Native.AllocUtf8(path);
        try { return LibC.access(p, LibC.X_OK) == 0; }
        finally { NativeMemory.Free(p); }
    }

    private static ulong Micros(long since) => (ulong)Stopwatch.GetElapsedTime(since).Ticks / 10;
}
