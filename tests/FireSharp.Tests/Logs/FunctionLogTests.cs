using FireSharp.Cli;
using FireSharp.Daemon.Functions;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Functions;
using Grpc.Core;

namespace FireSharp.Tests.Logs;

using StartKind = FireSharp.Pool.StartKind;

/// <summary>`fn logs`: Lambda's START/END/REPORT lines, the per-function ring, and StreamFunctionLogs over the daemon's FunctionService.</summary>
public sealed class FunctionLogTests
{
    private static InvokeResult Result(string id, StartKind kind = StartKind.Warm, string tail = "hello from the handler\n") => new()
    {
        RequestId = id,
        Status = InvokeStatus.Ran,
        LogTail = tail,
        Duration = TimeSpan.FromMilliseconds(12.345),
        BilledDuration = TimeSpan.FromMilliseconds(13),
        MemoryMib = 128,
        MaxMemoryUsedMib = 20,
        StartKind = kind,
        InitDuration = kind == StartKind.Warm ? null : TimeSpan.FromMilliseconds(456.789),
        Version = "3",
    };

    [Fact]
    public void The_lines_are_lambdas()
    {
        Assert.Equal(
            "START RequestId: 8f5e Version: $LATEST\n" +
            "hello from the handler\n" +
            "END RequestId: 8f5e\n" +
            "REPORT RequestId: 8f5e\tDuration: 12.35 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB\n",
            LambdaLogFormat.Format(Result("8f5e")));
        // A cold start adds the init duration; output without a final newline gets one.
        Assert.Equal(
            "START RequestId: c01d Version: $LATEST\n" +
            "no newline\n" +
            "END RequestId: c01d\n" +
            "REPORT RequestId: c01d\tDuration: 12.35 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB\tInit Duration: 456.79 ms\n",
            LambdaLogFormat.Format(Result("c01d", StartKind.SnapshotCold, "no newline")));
        var timedOut = Result("7105") with { VmStatus = VmInvokeStatus.Timeout, Timeout = TimeSpan.FromSeconds(3), FunctionError = FunctionErrorKind.Unhandled, LogTail = "" };
        Assert.Matches(@"^START RequestId: 7105 Version: \$LATEST\n\S+ 7105 Task timed out after 3\.00 seconds\nEND RequestId: 7105\nREPORT RequestId: 7105\t", LambdaLogFormat.Format(timedOut));
    }

    [Fact]
    public async Task The_ring_keeps_the_last_100_per_function_and_followers_get_new_ones()
    {
        var logs = new InvocationLogs();
        for (int i = 0; i < 105; i++) logs.Invoked("f", Result($"r{i}"));
        logs.Invoked("other", Result("o1"));
        var kept = new List<InvocationLog>();
        await foreach (var l in logs.ReadAsync("f", 0, follow: false, CancellationToken.None)) kept.Add(l);
        Assert.Equal(InvocationLogs.PerFunction, kept.Count);
        Assert.Equal("r5", kept[0].RequestId);
        Assert.Equal("r104", kept[^1].RequestId);
        var last2 = new List<string>();
        await foreach (var l in logs.ReadAsync("f", 2, follow: false, CancellationToken.None)) last2.Add(l.RequestId);
        Assert.Equal(["r103", "r104"], last2);

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var follower = logs.ReadAsync("f", 1, follow: true, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await follower.MoveNextAsync());
        Assert.Equal("r104", follower.Current.RequestId);
        var next = follower.MoveNextAsync().AsTask();
        logs.Invoked("other", Result("o2")); // another function's: not this follower's
        logs.Invoked("f", Result("r105"));
        Assert.True(await next);
        Assert.Equal("r105", follower.Current.RequestId);
        logs.Forget("f");
        await foreach (var _ in logs.ReadAsync("f", 0, follow: false, CancellationToken.None)) Assert.Fail("a forgotten function's logs are gone");
    }

    [Fact]
    public async Task StreamFunctionLogs_returns_the_invocations_of_the_daemon_as_lambda_lines()
    {
        await using var server = await FunctionTestServer.StartAsync();
        var spec = new FunctionSpec { Name = "logged", Handler = "h", Code = new FunctionCode { ImagePath = server.Code }, Image = new FunctionImage { KernelPath = server.Kernel, RootfsPath = server.Rootfs } };
        await server.Client.CreateFunctionAsync(new CreateFunctionRequest { Spec = spec });
        var ok = await server.Client.InvokeAsync(new InvokeRequest { Name = "logged", Payload = Google.Protobuf.ByteString.CopyFromUtf8("{}") });
        var failed = await server.Client.InvokeAsync(new InvokeRequest { Name = "logged", Payload = Google.Protobuf.ByteString.CopyFromUtf8("fail") });

        using var call = server.Client.StreamFunctionLogs(new StreamFunctionLogsRequest { Name = "logged" });
        var entries = new List<FunctionLogEntry>();
        await foreach (var e in call.ResponseStream.ReadAllAsync()) entries.Add(e);
        Assert.Equal([ok.RequestId, failed.RequestId], entries.Select(e => e.RequestId));
        Assert.StartsWith($"START RequestId: {ok.RequestId} Version: $LATEST\necho", entries[0].Text, StringComparison.Ordinal);
        Assert.Contains($"\nEND RequestId: {ok.RequestId}\nREPORT RequestId: {ok.RequestId}\tDuration: ", entries[0].Text, StringComparison.Ordinal);
        Assert.Contains("\tMemory Size: 128 MB\tMax Memory Used: 20 MB\tInit Duration: ", entries[0].Text, StringComparison.Ordinal); // the first was cold
        Assert.Contains("failing\nEND RequestId: ", entries[1].Text, StringComparison.Ordinal);
        Assert.DoesNotContain("Init Duration", entries[1].Text, StringComparison.Ordinal); // the second was warm

        await RpcAssert.FailsAsync(StatusCode.NotFound, async () =>
        {
            using var missing = server.Client.StreamFunctionLogs(new StreamFunctionLogsRequest { Name = "missing" });
            await foreach (var _ in missing.ResponseStream.ReadAllAsync()) { }
        }, "name");
        Assert.Equal(0, CliApp.Run(["fn", "logs", "logged", "--limit", "1", "--socket", server.Options.Socket]));
        Assert.NotEqual(0, CliApp.Run(["fn", "logs", "missing", "--socket", server.Options.Socket]));
    }
}
