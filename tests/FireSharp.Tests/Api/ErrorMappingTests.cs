using FireSharp.Daemon;
using FireSharp.Proto.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>Each error condition reaches the client as its status code, through the one interceptor.</summary>
[Collection("kvm")]
public sealed class ErrorMappingTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Every_condition_maps_to_its_status_over_the_wire()
    {
        await using var s = await ApiTestServer.StartAsync(output, o => o with { MaxVms = 2 });
        var c = s.Client;
        await c.CreateVmAsync(new CreateVmRequest { Id = "a", Spec = ApiTestServer.Spec("counter") });

        // InvalidArgument, with the field.
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.GetVmAsync(new GetVmRequest { Id = "" }).ResponseAsync, "id");
        // NotFound.
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.StartVmAsync(new StartVmRequest { Id = "zz" }).ResponseAsync, "id");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.DeleteVmAsync(new DeleteVmRequest { Id = "zz" }).ResponseAsync, "id");
        await RpcAssert.FailsAsync(StatusCode.NotFound, async () =>
        {
            using var w = c.WatchEvents(new WatchEventsRequest { Id = "zz" });
            await w.ResponseStream.MoveNext();
        }, "id");
        await RpcAssert.FailsAsync(StatusCode.NotFound, async () =>
        {
            using var con = c.StreamConsole();
            await con.RequestStream.WriteAsync(new ConsoleRequest { Id = "zz" });
            await con.ResponseStream.MoveNext();
        }, "id");
        // AlreadyExists.
        await RpcAssert.FailsAsync(StatusCode.AlreadyExists, () => c.CreateVmAsync(new CreateVmRequest { Id = "a", Spec = ApiTestServer.Spec("hello") }).ResponseAsync, "id");
        // FailedPrecondition: the wrong state for each call.
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.PauseVmAsync(new PauseVmRequest { Id = "a" }).ResponseAsync);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.ResumeVmAsync(new ResumeVmRequest { Id = "a" }).ResponseAsync);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.StopVmAsync(new StopVmRequest { Id = "a" }).ResponseAsync);
        await c.StartVmAsync(new StartVmRequest { Id = "a" });
        var e = await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.StartVmAsync(new StartVmRequest { Id = "a" }).ResponseAsync);
        Assert.Contains("running", e.Status.Detail);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.ResumeVmAsync(new ResumeVmRequest { Id = "a" }).ResponseAsync);
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.DeleteVmAsync(new DeleteVmRequest { Id = "a" }).ResponseAsync);
        // ResourceExhausted: the daemon's VM limit, the host's memory, the memory budget.
        await c.CreateVmAsync(new CreateVmRequest { Id = "b", Spec = ApiTestServer.Spec("hello") });
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted, () => c.CreateVmAsync(new CreateVmRequest { Id = "c", Spec = ApiTestServer.Spec("hello") }).ResponseAsync);
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "b" });
        await RpcAssert.FailsAsync(StatusCode.ResourceExhausted,
            () => c.CreateVmAsync(new CreateVmRequest { Id = "c", Spec = ApiTestServer.Spec("hello", memMib: 1000L * 1024) }).ResponseAsync, "spec.machine.mem_mib");
        // (Unimplemented: nothing in a spec is unimplemented since network interfaces exist; see Virtio/Net/NetDaemonTests.)
        // DeadlineExceeded: a stop whose grace period outlasts the call's deadline. The stop still completes.
        await RpcAssert.FailsAsync(StatusCode.DeadlineExceeded,
            () => c.StopVmAsync(new StopVmRequest { Id = "a", GracePeriodSeconds = 2 }, deadline: DateTime.UtcNow.AddMilliseconds(300)).ResponseAsync);
        var stopped = await s.WaitForStateAsync("a", VmState.Stopped);
        Assert.Equal(ExitKind.Stopped, stopped.Exit.Kind);
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "a" });
        Assert.Empty(s.VmDirs());
    }

    [SkippableFact]
    public async Task The_memory_budget_counts_vms_that_hold_a_machine()
    {
        var host = HostLimits.Detect();
        long hostMib = (long)(host.MemoryBytes / (1024 * 1024));
        // A budget of about 40% of the host: one VM of 30% fits, a second does not.
        await using var s = await ApiTestServer.StartAsync(output, o => o with { MemoryOvercommit = 0.4 });
        long mem = hostMib * 3 / 10;
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "big1", Spec = ApiTestServer.Spec("hello", memMib: mem) });
        var e = await RpcAssert.FailsAsync(StatusCode.ResourceExhausted,
            () => s.Client.CreateVmAsync(new CreateVmRequest { Id = "big2", Spec = ApiTestServer.Spec("hello", memMib: mem) }).ResponseAsync, "spec.machine.mem_mib");
        Assert.Contains("budget", e.Status.Detail);
        Assert.Single(s.VmDirs());
        // Once big1 has run and ended, it holds no memory.
        await s.Client.StartVmAsync(new StartVmRequest { Id = "big1" });
        await s.WaitForStateAsync("big1", VmState.Stopped);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "big2", Spec = ApiTestServer.Spec("hello", memMib: mem) });
    }

    [SkippableFact]
    public async Task A_client_that_cancels_a_call_leaves_the_daemon_consistent()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "x", Spec = ApiTestServer.Spec("counter"), Start = true });
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var e = await Assert.ThrowsAsync<RpcException>(() => s.Client.StopVmAsync(new StopVmRequest { Id = "x", GracePeriodSeconds = 2 }, cancellationToken: cts.Token).ResponseAsync);
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);
        await s.WaitForStateAsync("x", VmState.Stopped);
        // The next calls work as usual.
        Assert.Equal(VmState.Running, (await s.Client.StartVmAsync(new StartVmRequest { Id = "x" })).State);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "x", Force = true });
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
    }

    public static TheoryData<VmErrorKind, StatusCode> Kinds => new()
    {
        { VmErrorKind.InvalidArgument, StatusCode.InvalidArgument },
        { VmErrorKind.NotFound, StatusCode.NotFound },
        { VmErrorKind.AlreadyExists, StatusCode.AlreadyExists },
        { VmErrorKind.WrongState, StatusCode.FailedPrecondition },
        { VmErrorKind.ResourceExhausted, StatusCode.ResourceExhausted },
        { VmErrorKind.Unimplemented, StatusCode.Unimplemented },
        { VmErrorKind.Unavailable, StatusCode.Unavailable },
        { VmErrorKind.Timeout, StatusCode.DeadlineExceeded },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task The_interceptor_maps_each_error_kind(VmErrorKind kind, StatusCode code)
    {
        var interceptor = new ErrorInterceptor(NullLogger<ErrorInterceptor>.Instance);
        var e = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<string, string>("", new FakeContext(),
            (_, _) => throw new VmApiException(kind, "spec.x", "bad")));
        Assert.Equal(code, e.StatusCode);
        Assert.Equal("spec.x: bad", e.Status.Detail);
        Assert.Equal("spec.x", e.Trailers.GetValue(ErrorInterceptor.FieldTrailer));
    }

    [Fact]
    public async Task The_interceptor_maps_deadline_cancellation_and_bugs_never_to_unknown()
    {
        var interceptor = new ErrorInterceptor(NullLogger<ErrorInterceptor>.Instance);
        var late = new FakeContext { DeadlineValue = DateTime.UtcNow.AddSeconds(-1) };
        late.Cancel();
        var e = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<string, string>("", late, (_, ctx) => throw new OperationCanceledException(ctx.CancellationToken)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);

        var gone = new FakeContext();
        gone.Cancel();
        e = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<string, string>("", gone, (_, ctx) => throw new OperationCanceledException(ctx.CancellationToken)));
        Assert.Equal(StatusCode.Cancelled, e.StatusCode);

        e = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<string, string>("", new FakeContext(), (_, _) => throw new InvalidOperationException("oops")));
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        Assert.Contains("oops", e.Status.Detail);

        // A status a handler chose itself passes through untouched.
        e = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<string, string>("", new FakeContext(), (_, _) => throw new RpcException(new Status(StatusCode.Aborted, "mine"))));
        Assert.Equal(StatusCode.Aborted, e.StatusCode);

        // Streaming handlers go through the same mapping.
        e = await Assert.ThrowsAsync<RpcException>(() => interceptor.ServerStreamingServerHandler<string, string>("", null!, new FakeContext(), (_, _, _) => throw VmApiException.NotFound("q")));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        e = await Assert.ThrowsAsync<RpcException>(() => interceptor.DuplexStreamingServerHandler<string, string>(null!, null!, new FakeContext(), (_, _, _) => throw VmApiException.WrongState("w")));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
    }

    /// <summary>A minimal ServerCallContext for calling the interceptor directly.</summary>
    private sealed class FakeContext : ServerCallContext
    {
        private readonly CancellationTokenSource _cts = new();
        public DateTime DeadlineValue { get; init; } = DateTime.MaxValue;
        public void Cancel() => _cts.Cancel();
        protected override string MethodCore => "/firesharp.v1.VmService/Test";
        protected override string HostCore => "localhost";
        protected override string PeerCore => "unix:test";
        protected override DateTime DeadlineCore => DeadlineValue;
        protected override Metadata RequestHeadersCore => [];
        protected override CancellationToken CancellationTokenCore => _cts.Token;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore => new(null, []);
        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();
        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
