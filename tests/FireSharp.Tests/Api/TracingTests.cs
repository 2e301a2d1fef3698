using System.Diagnostics;
using FireSharp.Daemon.Agent;
using FireSharp.Daemon.Tracing;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using FireSharp.Tests.Agent;
using FireSharp.Tests.Support;
using Google.Protobuf;
using Microsoft.Extensions.Configuration;
using Grpc.Core;
using OpenTelemetry;
using OpenTelemetry.Trace;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// Issue 13's traces: an in-process daemon's spans, caught by OpenTelemetry's in-memory exporter, form one tree per
/// call under the client's span (its <c>traceparent</c> header): a VM create down to the worker's own time, and a
/// function invocation down to the guest agent's (an agent run on the host, over a Unix socket) with its phases.
/// </summary>
[Collection("kvm")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TracingTests(RuntimeAgent agent, ITestOutputHelper output) : IClassFixture<RuntimeAgent>
{
    [SkippableFact]
    public async Task A_vm_create_is_one_span_tree_from_the_grpc_call_to_the_workers_own_time()
    {
        using var spans = new SpanCatcher();
        await using var s = await ApiTestServer.StartAsync(output);
        var (traceparent, traceId, clientSpan) = NewClientSpan();

        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "traced", Spec = ApiTestServer.Spec("counter"), Start = true },
            new Metadata { { TracingInterceptor.TraceparentHeader, traceparent } });
        var trace = await spans.TraceAsync(traceId, "firesharp.v1.VmService/CreateVm");
        Dump(trace);

        var root = Single(trace, "firesharp.v1.VmService/CreateVm");
        Assert.Equal(ActivityKind.Server, root.Kind);
        Assert.Equal(clientSpan, root.ParentSpanId);
        Assert.Equal("CreateVm", root.GetTagItem("rpc.method"));
        Assert.Equal(0, root.GetTagItem("rpc.grpc.status_code"));
        AssertChild(root, Single(trace, DaemonTracing.ResponseSpan));
        var launch = Single(trace, DaemonTracing.WorkerLaunchSpan);
        Assert.Equal("traced", launch.GetTagItem(DaemonTracing.VmIdTag));
        Assert.True(IsUnder(trace, launch, root));

        var create = Single(trace, DaemonTracing.WorkerSpan("create"));
        Assert.Equal(ActivityKind.Client, create.Kind);
        Assert.True(IsUnder(trace, create, root));
        var handled = Single(trace, DaemonTracing.WorkerHandleSpan("create"));
        AssertChild(create, handled);
        Assert.True((long)create.GetTagItem(DaemonTracing.WorkerHandledTag)! > 0);
        Assert.True(handled.Duration <= create.Duration);
        Assert.Contains(trace, x => x.DisplayName == "worker machine" && x.ParentSpanId == handled.SpanId);
        var start = Single(trace, DaemonTracing.WorkerSpan("start"));
        Assert.True(IsUnder(trace, start, root));
        AssertChild(start, Single(trace, DaemonTracing.WorkerHandleSpan("start")));
        Assert.All(trace, span => Assert.True(span == root || trace.Any(p => p.SpanId == span.ParentSpanId), $"{span.DisplayName} has no parent in the trace"));
    }

    [SkippableFact]
    public async Task A_function_invocation_is_one_span_tree_down_to_the_guest_agents_phases()
    {
        TestEnvironment.Require(RuntimeAgent.Busybox is not null, "busybox is not installed on this host");
        using var spans = new SpanCatcher();
        var factory = new HostAgentFactory(agent);
        await using var s = await ApiTestServer.StartAsync(output, functionVms: factory);
        var functions = new FunctionService.FunctionServiceClient(s.Channel);
        await functions.CreateFunctionAsync(new CreateFunctionRequest { Spec = await StandInFunctionAsync(s.Options.StateDir, "echo") });

        // The first invocation makes the VM (a cold start: "pool create vm"); the second reuses it.
        var (coldParent, coldTrace, _) = NewClientSpan();
        var cold = await functions.InvokeAsync(new InvokeRequest { Name = "echo", Payload = ByteString.CopyFromUtf8("{\"n\":1}") },
            new Metadata { { TracingInterceptor.TraceparentHeader, coldParent } });
        Assert.Equal("", cold.FunctionError);
        var coldSpans = await spans.TraceAsync(coldTrace, "firesharp.v1.FunctionService/Invoke");
        AssertChild(Single(coldSpans, PoolTracing.AcquireSpan), Single(coldSpans, PoolTracing.CreateVmSpan));

        var (traceparent, traceId, clientSpan) = NewClientSpan();
        var warm = await functions.InvokeAsync(new InvokeRequest { Name = "echo", Payload = ByteString.CopyFromUtf8("{\"n\":2}") },
            new Metadata { { TracingInterceptor.TraceparentHeader, traceparent } });
        Assert.Equal(FireSharp.Proto.V1.StartKind.Warm, warm.StartKind);
        var trace = await spans.TraceAsync(traceId, "firesharp.v1.FunctionService/Invoke");
        Dump(trace);

        var root = Single(trace, "firesharp.v1.FunctionService/Invoke");
        Assert.Equal(ActivityKind.Server, root.Kind);
        Assert.Equal(clientSpan, root.ParentSpanId);
        AssertChild(root, Single(trace, DaemonTracing.ResponseSpan));
        var acquire = Single(trace, PoolTracing.AcquireSpan);
        AssertChild(root, acquire);
        Assert.Equal("warm", acquire.GetTagItem("firesharp.start_kind"));
        Assert.Equal(false, acquire.GetTagItem("faas.coldstart"));
        Assert.DoesNotContain(trace, x => x.DisplayName == PoolTracing.CreateVmSpan);
        var invoke = Single(trace, PoolTracing.InvokeSpan);
        AssertChild(root, invoke);
        Assert.True(invoke.StartTimeUtc >= acquire.StartTimeUtc + acquire.Duration);

        var agentSpan = Single(trace, DaemonTracing.AgentSpan("invoke"));
        AssertChild(invoke, agentSpan);
        Assert.Equal(ActivityKind.Client, agentSpan.Kind);
        Assert.Equal([AgentTracing.RequestSentEvent, AgentTracing.ReplyReceivedEvent], agentSpan.Events.Select(e => e.Name));
        long inVm = (long)agentSpan.GetTagItem(DaemonTracing.GuestInVmTag)!;
        long handoff = (long)agentSpan.GetTagItem(DaemonTracing.GuestReceiveToHandoffTag)!;
        long runtime = (long)agentSpan.GetTagItem(DaemonTracing.GuestHandoffToAnswerTag)!;
        long reply = (long)agentSpan.GetTagItem(DaemonTracing.GuestAnswerToReplyTag)!;
        Assert.True(runtime > 0, "the runtime's time");
        Assert.InRange(inVm - (handoff + runtime + reply), 0, 3); // the phases add up (each rounded down to a µs)
        long transit = (long)agentSpan.GetTagItem(DaemonTracing.VsockTransitTag)!;
        Assert.True(transit >= 0);

        var guest = Single(trace, DaemonTracing.GuestSpan);
        AssertChild(agentSpan, guest);
        // The guest's own figure, unless the host measured a shorter round trip (the two clocks sample at different
        // points): then the guest span is clamped to the round trip and the transit is 0.
        if (transit > 0) Assert.Equal(inVm, DaemonTracing.Micros(guest.Duration));
        else Assert.InRange(DaemonTracing.Micros(guest.Duration), 0, inVm);
        Assert.True(guest.StartTimeUtc >= agentSpan.StartTimeUtc && guest.StartTimeUtc + guest.Duration <= agentSpan.StartTimeUtc + agentSpan.Duration);
        var guestRuntime = Single(trace, DaemonTracing.GuestRuntimeSpan);
        AssertChild(guest, guestRuntime);
        if (transit > 0) Assert.Equal(runtime, DaemonTracing.Micros(guestRuntime.Duration));
        else Assert.InRange(DaemonTracing.Micros(guestRuntime.Duration), 0, runtime); // clamped into the guest span
        Assert.All(trace, span => Assert.True(span == root || trace.Any(p => p.SpanId == span.ParentSpanId), $"{span.DisplayName} has no parent in the trace"));

        // The runtime was handed the agent span's context as the traceparent header.
        Assert.Contains(agentSpan.TraceId.ToHexString() + "-" + agentSpan.SpanId.ToHexString(), warm.Payload.ToStringUtf8(), StringComparison.Ordinal);
    }

    [Fact]
    public void Otlp_export_is_off_by_default_and_its_settings_are_checked()
    {
        static FireSharp.Daemon.DaemonOptions From(params string[] args) =>
            FireSharp.Daemon.DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(args).Build());
        Assert.Null(From().OtlpEndpoint);
        Assert.Null(From().TraceFile);
        Assert.Null(From("--OtlpEndpoint=off").OtlpEndpoint);
        var on = From("--OtlpEndpoint=http://127.0.0.1:4318/v1/traces", "--OtlpProtocol=http/protobuf", "--TraceFile=/tmp/spans.jsonl");
        Assert.Equal("http://127.0.0.1:4318/v1/traces", on.OtlpEndpoint);
        Assert.Equal("http/protobuf", on.OtlpProtocol);
        Assert.Contains("OtlpEndpoint", Assert.Throws<ArgumentException>(() => From("--OtlpEndpoint=127.0.0.1:4317")).Message);
        Assert.Contains("OtlpProtocol", Assert.Throws<ArgumentException>(() => From("--OtlpEndpoint=http://c:4317", "--OtlpProtocol=thrift")).Message);
        Assert.Contains("TraceFile", Assert.Throws<ArgumentException>(() => From("--TraceFile=spans.jsonl")).Message);
    }

    [Fact]
    public void A_guests_absurd_timings_are_clamped_into_the_round_trip_and_never_throw()
    {
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == DaemonTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (spans) spans.Add(a); },
        };
        ActivitySource.AddActivityListener(listener);
        using var roundTrip = DaemonTracing.Source.StartActivity("agent invoke (test)")!;
        var replied = roundTrip.StartTimeUtc + TimeSpan.FromMilliseconds(5);
        var lying = new FireSharp.Proto.Agent.GuestTimings { InVmUs = ulong.MaxValue, ReceiveToHandoffUs = ulong.MaxValue, HandoffToAnswerUs = ulong.MaxValue, AnswerToReplyUs = ulong.MaxValue };
        FireSharp.Daemon.Agent.AgentTracing.RecordGuest(roundTrip, replied, lying); // threw OverflowException / ArgumentOutOfRange before
        List<Activity> guest;
        lock (spans) guest = [.. spans.Where(a => a.ParentSpanId == roundTrip.SpanId || a.Parent?.ParentSpanId == roundTrip.SpanId)];
        Assert.NotEmpty(guest);
        Assert.All(guest, a => Assert.True(a.StartTimeUtc >= roundTrip.StartTimeUtc && a.StartTimeUtc + a.Duration <= replied, $"{a.DisplayName} {a.StartTimeUtc:O} +{a.Duration}"));
    }

    [Fact]
    public void The_trace_file_has_one_json_object_a_span_with_its_parent_and_attributes()
    {
        string path = Path.Combine(TestPaths.TempDir(), "spans.jsonl");
        using var source = new ActivitySource("FireSharp.Tests.TraceFile");
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s == source,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        var parent = source.StartActivity("parent")!;
        var child = source.StartActivity("child", ActivityKind.Client)!;
        child.SetTag("n", 42L);
        child.SetTag("s", "text");
        child.SetStatus(ActivityStatusCode.Error, "failed");
        child.Stop();
        parent.Stop();
        using (var exporter = new JsonLinesSpanExporter(path))
        {
            Assert.Equal(ExportResult.Success, exporter.Export(new Batch<Activity>([child, parent], 2)));
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(2, lines.Length);
        var c = System.Text.Json.JsonDocument.Parse(lines[0]).RootElement;
        var p = System.Text.Json.JsonDocument.Parse(lines[1]).RootElement;
        Assert.Equal("child", c.GetProperty("name").GetString());
        Assert.Equal("client", c.GetProperty("kind").GetString());
        Assert.Equal("error", c.GetProperty("status").GetString());
        Assert.Equal(parent.SpanId.ToHexString(), c.GetProperty("parent_span_id").GetString());
        Assert.Equal(p.GetProperty("span_id").GetString(), c.GetProperty("parent_span_id").GetString());
        Assert.Equal(parent.TraceId.ToHexString(), c.GetProperty("trace_id").GetString());
        Assert.Equal("", p.GetProperty("parent_span_id").GetString());
        Assert.Equal(42, c.GetProperty("attributes").GetProperty("n").GetInt64());
        Assert.Equal("text", c.GetProperty("attributes").GetProperty("s").GetString());
        Assert.Equal(DaemonTracing.Micros(child.Duration), c.GetProperty("duration_us").GetInt64());
    }

    private void Dump(IReadOnlyList<Activity> trace)
    {
        foreach (var span in trace.OrderBy(x => x.StartTimeUtc))
            output.WriteLine($"{span.SpanId} <- {span.ParentSpanId}  {span.DisplayName,-40} {span.Duration.TotalMilliseconds,10:F3} ms  {string.Join(' ', span.TagObjects.Select(t => $"{t.Key}={t.Value}"))}");
    }

    private static (string Traceparent, ActivityTraceId TraceId, ActivitySpanId SpanId) NewClientSpan()
    {
        var trace = ActivityTraceId.CreateRandom();
        var span = ActivitySpanId.CreateRandom();
        return ($"00-{trace.ToHexString()}-{span.ToHexString()}-01", trace, span);
    }

    private static Activity Single(IReadOnlyList<Activity> trace, string name)
    {
        var found = trace.Where(x => x.DisplayName == name).ToList();
        Assert.True(found.Count == 1, $"{found.Count} spans named '{name}' in: {string.Join(", ", trace.Select(x => x.DisplayName))}");
        return found[0];
    }

    private static void AssertChild(Activity parent, Activity child)
    {
        Assert.True(child.ParentSpanId == parent.SpanId, $"'{child.DisplayName}' is not a child of '{parent.DisplayName}'");
        Assert.Equal(parent.TraceId, child.TraceId);
    }

    private static bool IsUnder(IReadOnlyList<Activity> trace, Activity span, Activity ancestor)
    {
        for (var x = span; x is not null; x = trace.FirstOrDefault(p => p.SpanId == x.ParentSpanId))
            if (x.ParentSpanId == ancestor.SpanId) return true;
        return false;
    }

    private static async Task<FunctionSpec> StandInFunctionAsync(string dir, string name)
    {
        foreach (var f in (string[])["vmlinux", "rootfs.ext4", "code.ext4"])
            await File.WriteAllTextAsync(Path.Combine(dir, f), "stand-in");
        return new FunctionSpec
        {
            Name = name,
            Handler = "function.handler",
            Image = new FunctionImage { KernelPath = Path.Combine(dir, "vmlinux"), RootfsPath = Path.Combine(dir, "rootfs.ext4") },
            Code = new FunctionCode { ImagePath = Path.Combine(dir, "code.ext4") },
            TimeoutSeconds = 30,
        };
    }

    /// <summary>The daemon's and the pool's spans, caught while it lives (other tests' spans too: look them up by trace).</summary>
    private sealed class SpanCatcher : IDisposable
    {
        private readonly List<Activity> _spans = [];
        private readonly TracerProvider _provider;

        public SpanCatcher() =>
            _provider = Sdk.CreateTracerProviderBuilder().AddSource(DaemonTracing.SourceNames).AddInMemoryExporter(_spans).Build()!;

        /// <summary>The trace's spans once its <paramref name="root"/> has ended (after the response went out).</summary>
        public async Task<IReadOnlyList<Activity>> TraceAsync(ActivityTraceId trace, string root)
        {
            for (var until = DateTime.UtcNow.AddSeconds(10); ; await Task.Delay(20))
            {
                List<Activity> found;
                lock (_spans) found = _spans.Where(x => x.TraceId == trace).ToList();
                if (found.Any(x => x.DisplayName == root) || DateTime.UtcNow > until) return found;
            }
        }

        public void Dispose() => _provider.Dispose();
    }

    /// <summary>Function "VMs" that are the class's host-run agent: each starts the echo function there and invokes it.</summary>
    private sealed class HostAgentFactory(RuntimeAgent agent) : IFunctionVmFactory
    {
        // Prints the traceparent header the runtime was given (the example bootstrap exports the invocation's headers).
        private const string Echo = """
            handler() {
                printf '{"traceparent":"%s","event":%s}\n' "$TRACEPARENT" "$1"
            }
            """;

        public async Task<IFunctionVm> CreateAsync(FunctionDefinition definition, CancellationToken cancellationToken)
        {
            var client = await agent.ConnectAsync(cancellationToken);
            var init = await client.InitFunctionAsync(agent.NewFunction(Echo), cancellationToken);
            if (!init.Ok) throw new FunctionInitException(init.ErrorType, init.ErrorMessage, init.LogTail);
            return new HostAgentVm(client);
        }

        public Task DiscardSnapshotsAsync(string functionName, string? keepVersion, CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class HostAgentVm(AgentClient client) : IFunctionVm
    {
        public string Id => "host-agent";
        public FireSharp.Pool.StartKind CreatedAs => FireSharp.Pool.StartKind.BootCold;
        public TimeSpan InitDuration => TimeSpan.Zero;

        public async Task<VmInvokeOutcome> InvokeAsync(VmInvokeRequest request, CancellationToken cancellationToken)
        {
            var reply = await client.InvokeFunctionAsync(new FireSharp.Proto.Agent.InvokeRequest
            {
                RequestId = request.RequestId,
                Payload = ByteString.CopyFrom(request.Payload.Span),
                TimeoutMs = 30_000,
            }, cancellationToken);
            return new VmInvokeOutcome
            {
                Status = reply.Status == FireSharp.Proto.Agent.InvokeStatus.Success ? VmInvokeStatus.Success : VmInvokeStatus.FunctionError,
                Payload = reply.Payload.Memory,
                LogTail = reply.LogTail,
                Duration = TimeSpan.FromTicks((long)reply.DurationUs * 10),
            };
        }

        public async Task ShutdownAsync(string reason, CancellationToken cancellationToken)
        {
            try { await client.ShutdownFunctionAsync(new FireSharp.Proto.Agent.FunctionShutdownRequest { Reason = "spindown" }, cancellationToken); }
            catch (Exception e) when (e is AgentException or OperationCanceledException) { }
            await DisposeAsync();
        }

        public ValueTask DisposeAsync() => client.DisposeAsync();
    }
}
