using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using FireSharp.Tests.Support;
using Xunit.Abstractions;

namespace FireSharp.Tests.Agent;

/// <summary>
/// The agent's Lambda Runtime/Extensions API and its FunctionInit/Invoke/FunctionShutdown
/// requests, on the host (no VM): a real agent process runs the example busybox-sh bootstrap
/// (examples/shell/bootstrap) from a temporary task root.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RuntimeApiTests(RuntimeAgent fixture, ITestOutputHelper output) : IClassFixture<RuntimeAgent>
{
    private static CancellationToken Deadline(int seconds = 60) => new CancellationTokenSource(TimeSpan.FromSeconds(seconds)).Token;

    // Echoes what the runtime saw: the event and the invocation headers.
    private const string EchoFunction = """
        handler() {
            echo "log line for $REQUEST_ID" >&2
            printf '{"requestId":"%s","deadlineMs":"%s","arn":"%s","trace":"%s","name":"%s","memory":"%s","event":%s}\n' \
                "$REQUEST_ID" "$DEADLINE_MS" "$FUNCTION_ARN" "$_X_AMZN_TRACE_ID" "$AWS_LAMBDA_FUNCTION_NAME" \
                "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" "$1"
        }
        """;

    private async Task<AgentClient> StartAsync(FunctionInitRequest init)
    {
        TestEnvironment.Require(RuntimeAgent.Busybox is not null, "busybox is not installed on this host");
        var client = await fixture.ConnectAsync(Deadline());
        var reply = await client.InitFunctionAsync(init, Deadline());
        output.WriteLine($"init: ok={reply.Ok} {reply.ErrorType} {reply.ErrorMessage} ({reply.InitDurationUs} us) log: {reply.LogTail}");
        Assert.True(reply.Ok, $"{reply.ErrorType}: {reply.ErrorMessage}\n{reply.LogTail}");
        Assert.True(reply.InitDurationUs > 0);
        return client;
    }

    private static JsonElement Json(InvokeReply reply) => JsonDocument.Parse(reply.Payload.ToStringUtf8()).RootElement;

    [SkippableFact]
    public async Task Invoke_round_trips_the_payload_and_passes_the_invocation_headers()
    {
        await using var client = await StartAsync(fixture.NewFunction(EchoFunction));
        var request = RuntimeAgent.Invocation("""{"hello":"world","n":[1,2,3]}""");
        var reply = await client.InvokeFunctionAsync(request, Deadline());
        output.WriteLine(reply.ToString());

        Assert.Equal(InvokeStatus.Success, reply.Status);
        var json = Json(reply);
        Assert.Equal(request.RequestId, json.GetProperty("requestId").GetString());
        Assert.Equal(request.DeadlineUnixMs.ToString(System.Globalization.CultureInfo.InvariantCulture), json.GetProperty("deadlineMs").GetString());
        Assert.Equal(request.InvokedFunctionArn, json.GetProperty("arn").GetString());
        Assert.Equal(request.TraceId, json.GetProperty("trace").GetString());
        Assert.Equal("test-fn", json.GetProperty("name").GetString());
        Assert.Equal("128", json.GetProperty("memory").GetString());
        Assert.Equal("world", json.GetProperty("event").GetProperty("hello").GetString());
        Assert.Equal(3, json.GetProperty("event").GetProperty("n").GetArrayLength());
        Assert.Contains("log line for " + request.RequestId, reply.LogTail);
        Assert.False(reply.Unhandled);
        Assert.True(reply.DurationUs > 0);
        Assert.True(reply.MaxMemoryKib > 0);

        // A warm second invocation on the same runtime.
        var second = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("42"), Deadline());
        Assert.Equal(InvokeStatus.Success, second.Status);
        Assert.Equal(42, Json(second).GetProperty("event").GetInt32());
        Assert.DoesNotContain(request.RequestId, second.LogTail);

        // With timeout_ms the runtime's deadline is the agent's now + timeout_ms (here the same clock).
        var relative = RuntimeAgent.Invocation("{}");
        relative.DeadlineUnixMs = 0;
        relative.TimeoutMs = 600_000;
        long before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var third = await client.InvokeFunctionAsync(relative, Deadline());
        long after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        long deadlineMs = long.Parse(Json(third).GetProperty("deadlineMs").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(deadlineMs, before + 600_000, after + 600_000);

        // A request id cannot be used twice.
        var e = await Assert.ThrowsAsync<AgentException>(() => client.InvokeFunctionAsync(request, Deadline()));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_handler_error_is_a_handled_function_error_with_its_error_type()
    {
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() { echo "something \"bad\" happened"; return 1; }
            """));
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.FunctionError, reply.Status);
        Assert.False(reply.Unhandled);
        Assert.Equal("HandlerError", reply.ErrorType);
        var json = Json(reply);
        Assert.Equal("HandlerError", json.GetProperty("errorType").GetString());
        Assert.Equal("something \"bad\" happened", json.GetProperty("errorMessage").GetString());

        // The runtime goes on serving.
        var again = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.FunctionError, again.Status);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_runtime_that_exits_mid_invoke_is_reported_unhandled()
    {
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() { echo "about to die" >&2; kill -TERM $$; sleep 5; }
            """));
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        output.WriteLine(reply.ToString());
        Assert.Equal(InvokeStatus.RuntimeExited, reply.Status);
        Assert.True(reply.Unhandled);
        Assert.Equal("Runtime.ExitError", reply.ErrorType);
        Assert.Contains("about to die", reply.LogTail);

        // Later invocations find no runtime.
        var next = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.RuntimeExited, next.Status);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_runtime_killed_by_sigkill_it_did_not_get_from_the_agent_is_out_of_memory()
    {
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() { kill -KILL $$; }
            """));
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.OutOfMemory, reply.Status);
        Assert.True(reply.Unhandled);
        Assert.Equal("Runtime.OutOfMemory", reply.ErrorType);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_deadline_that_passes_kills_the_runtime_process_group()
    {
        var init = fixture.NewFunction("""
            handler() { echo $$ > "$LAMBDA_TASK_ROOT/pid"; sleep 60 & sleep 60; }
            """);
        await using var client = await StartAsync(init);
        // The relative budget (timeout_ms), which the pool uses: the guest's clock may be off.
        var timed = RuntimeAgent.Invocation("{}");
        timed.DeadlineUnixMs = 0;
        timed.TimeoutMs = 2000;
        var reply = await client.InvokeFunctionAsync(timed, Deadline());
        output.WriteLine(reply.ToString());
        Assert.Equal(InvokeStatus.Timeout, reply.Status);
        Assert.True(reply.Unhandled);
        Assert.Equal("Sandbox.Timedout", reply.ErrorType);
        Assert.Contains("Task timed out", Json(reply).GetProperty("errorMessage").GetString());

        int pgid = int.Parse(File.ReadAllText(Path.Combine(init.TaskRoot, "pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        // Killed and reaped (the agent is a subreaper): no process of that group remains.
        var members = ProcessGroupMembers(pgid);
        for (int i = 0; i < 100 && members.Count > 0; i++)
        {
            await Task.Delay(50);
            members = ProcessGroupMembers(pgid);
        }
        Assert.Empty(members);

        var next = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.RuntimeExited, next.Status);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task Runtime_init_error_fails_init_with_the_reported_type()
    {
        TestEnvironment.Require(RuntimeAgent.Busybox is not null, "busybox is not installed on this host");
        await using var client = await fixture.ConnectAsync(Deadline());
        // No function.sh: the example bootstrap posts /runtime/init/error and exits.
        var reply = await client.InitFunctionAsync(fixture.NewFunction(functionSh: null), Deadline());
        output.WriteLine(reply.ToString());
        Assert.False(reply.Ok);
        Assert.Equal("Runtime.HandlerNotFound", reply.ErrorType);
        Assert.Contains("function.sh", reply.ErrorMessage);
        Assert.Contains("not found", reply.LogTail);

        var e = await Assert.ThrowsAsync<AgentException>(() => client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline()));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
    }

    [SkippableFact]
    public async Task A_missing_bootstrap_is_an_invalid_entrypoint()
    {
        await using var client = await fixture.ConnectAsync(Deadline());
        var init = fixture.NewFunction(EchoFunction, withBootstrap: false);
        var reply = await client.InitFunctionAsync(init, Deadline());
        Assert.False(reply.Ok);
        Assert.Equal("Runtime.InvalidEntrypoint", reply.ErrorType);
        Assert.Contains(Path.Combine(init.TaskRoot, "bootstrap"), reply.ErrorMessage);
        Assert.Contains(Path.Combine(init.OptDir, "bootstrap"), reply.ErrorMessage);
    }

    [SkippableFact]
    public async Task A_runtime_that_exits_during_init_is_an_exit_error_and_a_silent_one_times_out()
    {
        TestEnvironment.Require(RuntimeAgent.Busybox is not null, "busybox is not installed on this host");
        await using var client = await fixture.ConnectAsync(Deadline());
        var exits = fixture.NewFunction(EchoFunction, withBootstrap: false);
        await File.WriteAllTextAsync(Path.Combine(exits.OptDir, "bootstrap"), "#!/bin/sh\necho crashing >&2\nexit 7\n");
        File.SetUnixFileMode(Path.Combine(exits.OptDir, "bootstrap"), (UnixFileMode)0b111_101_101);
        var reply = await client.InitFunctionAsync(exits, Deadline());
        Assert.False(reply.Ok);
        Assert.Equal("Runtime.ExitError", reply.ErrorType);
        Assert.Contains("exit status 7", reply.ErrorMessage);
        Assert.Contains("crashing", reply.LogTail);

        var silent = fixture.NewFunction(EchoFunction, withBootstrap: false);
        await File.WriteAllTextAsync(Path.Combine(silent.TaskRoot, "bootstrap"), "#!/bin/sh\necho $$ > \"$LAMBDA_TASK_ROOT/pid\"\nexec sleep 60\n");
        File.SetUnixFileMode(Path.Combine(silent.TaskRoot, "bootstrap"), (UnixFileMode)0b111_101_101);
        silent.InitTimeoutMs = 1500;
        reply = await client.InitFunctionAsync(silent, Deadline());
        Assert.False(reply.Ok);
        Assert.Equal("Sandbox.Timedout", reply.ErrorType);
    }

    private const string RecorderExtension = """
        #!/bin/sh
        # Registers for INVOKE and SHUTDOWN and appends every event to $LAMBDA_TASK_ROOT/events.
        API="http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension"
        OUT="$LAMBDA_TASK_ROOT/events"
        H="$TMPDIR/recorder.headers"
        wget -q -S -O /dev/null --header "Lambda-Extension-Name: recorder" \
            --post-data '{"events":["INVOKE","SHUTDOWN"]}' "$API/register" 2> "$H" || exit 1
        ID=$(grep -i '^ *Lambda-Extension-Identifier:' "$H" | sed 's/^[^:]*: *//' | tr -d '\r')
        echo "recorder registered as $ID"
        while true; do
            wget -q -O "$TMPDIR/recorder.event" --header "Lambda-Extension-Identifier: $ID" "$API/event/next" || exit 2
            cat "$TMPDIR/recorder.event" >> "$OUT"
            echo >> "$OUT"
            if grep -q SHUTDOWN "$TMPDIR/recorder.event"; then echo "recorder done" >&2; exit 0; fi
        done
        """;

    [SkippableFact]
    public async Task An_extension_registers_and_receives_invoke_and_shutdown()
    {
        var init = fixture.NewFunction(EchoFunction, new Dictionary<string, string> { ["recorder"] = RecorderExtension });
        await using var client = await fixture.ConnectAsync(Deadline());
        TestEnvironment.Require(RuntimeAgent.Busybox is not null, "busybox is not installed on this host");
        var initReply = await client.InitFunctionAsync(init, Deadline());
        output.WriteLine(initReply.ToString());
        Assert.True(initReply.Ok, initReply.ToString());
        Assert.Equal(new[] { "recorder" }, initReply.Extensions.ToArray());
        Assert.Contains("recorder registered as", initReply.LogTail);

        var request = RuntimeAgent.Invocation("{}");
        var reply = await client.InvokeFunctionAsync(request, Deadline());
        Assert.Equal(InvokeStatus.Success, reply.Status);

        var shutdown = await client.ShutdownFunctionAsync(new FunctionShutdownRequest { Reason = "spindown", DeadlineMs = 5000 }, Deadline());
        output.WriteLine(shutdown.ToString());
        Assert.Equal(0u, shutdown.Killed); // the extension exited by itself; the runtime on SIGTERM

        var events = File.ReadAllLines(Path.Combine(init.TaskRoot, "events")).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(2, events.Count);
        Assert.Equal("INVOKE", events[0].GetProperty("eventType").GetString());
        Assert.Equal(request.RequestId, events[0].GetProperty("requestId").GetString());
        Assert.Equal(request.InvokedFunctionArn, events[0].GetProperty("invokedFunctionArn").GetString());
        Assert.Equal((long)request.DeadlineUnixMs, events[0].GetProperty("deadlineMs").GetInt64());
        Assert.Equal(request.TraceId, events[0].GetProperty("tracing").GetProperty("value").GetString());
        Assert.Equal("SHUTDOWN", events[1].GetProperty("eventType").GetString());
        Assert.Equal("spindown", events[1].GetProperty("shutdownReason").GetString());
    }

    [SkippableFact]
    public async Task A_flooding_handler_leaves_a_4_KiB_log_tail_and_the_agent_memory_bounded()
    {
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() {
                head -c 67108864 /dev/zero | tr '\000' x
                echo
                echo END-OF-FLOOD
                echo '{"ok":true}' > "$TMPDIR/flood.response"
                cat "$TMPDIR/flood.response" >&3
            } 3>&1 >&2
            """));
        long rssBefore = AgentRssKib();
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline(120));
        long rssAfter = AgentRssKib();
        output.WriteLine($"agent RSS {rssBefore} -> {rssAfter} KiB; tail {reply.LogTail.Length} chars");
        Assert.Equal(InvokeStatus.Success, reply.Status);
        Assert.True(Json(reply).GetProperty("ok").GetBoolean());
        Assert.Equal(4096, Encoding.UTF8.GetByteCount(reply.LogTail));
        Assert.EndsWith("END-OF-FLOOD\n", reply.LogTail);
        // 64 MiB went through the agent; it kept only the tail.
        Assert.True(rssAfter - rssBefore < 32 * 1024, $"agent RSS grew from {rssBefore} to {rssAfter} KiB");
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_five_megabyte_response_arrives_whole()
    {
        // Under Lambda's 6 MB: it travels in one agent frame.
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() { printf '"'; head -c 5000000 /dev/zero | tr '\000' a; printf '"'; }
            """));
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.Success, reply.Status);
        Assert.Equal(5_000_002, reply.Payload.Length);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task A_response_too_large_for_a_frame_is_a_response_size_error()
    {
        // Lambda allows 6 MB (6291456 bytes); 6.5 MB is too large.
        await using var client = await StartAsync(fixture.NewFunction("""
            handler() { printf '"'; head -c 6500000 /dev/zero | tr '\000' a; printf '"'; }
            """));
        var reply = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline());
        Assert.Equal(InvokeStatus.FunctionError, reply.Status);
        Assert.Equal("Function.ResponseSizeTooLarge", reply.ErrorType);
        Assert.Equal("Function.ResponseSizeTooLarge", Json(reply).GetProperty("errorType").GetString());
        // The connection is fine (the reply fitted in a frame).
        Assert.Equal("ok", (await client.PingAsync("ok"u8.ToArray(), Deadline())).Payload.ToStringUtf8());
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task Malformed_or_misdirected_requests_get_4xx_and_the_agent_goes_on()
    {
        await using var client = await StartAsync(fixture.NewFunction(EchoFunction));
        Assert.StartsWith("HTTP/1.1 400", await RawAsync("GARBAGE\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 400", await RawAsync("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 404", await RawAsync("GET /nothing/here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        Assert.StartsWith("HTTP/1.1 400", await RawAsync("POST /2018-06-01/runtime/invocation/no-such-id/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
        Assert.StartsWith("HTTP/1.1 400", await RawAsync("POST /2020-01-01/extension/register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
        Assert.StartsWith("HTTP/1.1 403", await RawAsync("GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: x\r\nLambda-Extension-Identifier: nope\r\nConnection: close\r\n\r\n"));
        // Registration is over once init is done.
        Assert.StartsWith("HTTP/1.1 403", await RawAsync("POST /2020-01-01/extension/register HTTP/1.1\r\nHost: x\r\nLambda-Extension-Name: late\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
        Assert.StartsWith("HTTP/1.1 403", await RawAsync("POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));

        var request = RuntimeAgent.Invocation("{}");
        var reply = await client.InvokeFunctionAsync(request, Deadline());
        Assert.Equal(InvokeStatus.Success, reply.Status);
        // A second response for an invocation that is over.
        Assert.StartsWith("HTTP/1.1 403", await RawAsync($"POST /2018-06-01/runtime/invocation/{request.RequestId}/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"));

        var pong = await client.PingAsync("alive"u8.ToArray(), Deadline());
        Assert.Equal("alive", pong.Payload.ToStringUtf8());
        Assert.Equal(InvokeStatus.Success, (await client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline())).Status);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [SkippableFact]
    public async Task Shutdown_stops_the_runtime_and_the_api_server()
    {
        var init = fixture.NewFunction("""
            handler() { echo '{}'; }
            """);
        await using var client = await StartAsync(init);
        var reply = await client.ShutdownFunctionAsync(new FunctionShutdownRequest { Reason = "spindown" }, Deadline());
        Assert.True(reply.DurationUs > 0);
        await Assert.ThrowsAnyAsync<SocketException>(() => RawAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        var e = await Assert.ThrowsAsync<AgentException>(() => client.InvokeFunctionAsync(RuntimeAgent.Invocation("{}"), Deadline()));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
    }

    private async Task<string> RawAsync(string request)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, fixture.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes(request));
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
        var text = Encoding.ASCII.GetString(buffer, 0, n);
        output.WriteLine(text.Split('\n')[0]);
        return text;
    }

    private long AgentRssKib()
    {
        foreach (var line in File.ReadLines($"/proc/{fixture.Agent.Process.Id}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line[6..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    private static List<int> ProcessGroupMembers(int pgid)
    {
        var members = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (int.Parse(fields[2], System.Globalization.CultureInfo.InvariantCulture) == pgid) members.Add(pid);
            }
            catch (IOException) { }
        }
        return members;
    }
}
