using System.Net.Sockets;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using AgentInfo = FireSharp.Proto.Agent.AgentInfo;
using Ready = FireSharp.Proto.Agent.Ready;
using Response = FireSharp.Proto.Agent.Response;
using FireSharp.Proto.V1;
using FireSharp.Tests.Agent;
using FireSharp.Tests.Cli;
using Grpc.Core;
using Xunit.Abstractions;

using FireSharp.Framing;

namespace FireSharp.Tests.Api;

/// <summary>
/// The daemon's agent path without a Linux guest: a tiny looping guest with spec.agent, whose hybrid
/// vsock socket (v.sock in the VM's run directory) is replaced by a fake that splices CONNECT 52 to a
/// real agent on the host; the ready report is sent to v.sock_53 by hand.
/// </summary>
[Collection("kvm")]
public sealed class AgentExecApiTests(ITestOutputHelper output)
{
    internal static async Task SendReadyAsync(string readyPath)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(readyPath));
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        using var writer = new FrameWriter(stream, AgentProtocol.MaxFrameBytes);
        await writer.WriteAsync(new Response { Ready = new Ready { Agent = new AgentInfo { Version = "fake" }, Port = 52 } });
    }

    [SkippableFact]
    public async Task Exec_runs_through_the_agent_once_it_is_ready_and_stop_asks_the_agent_first()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await using var agent = await AgentUnderTest.StartAsync();
        var spec = ApiTestServer.Spec("counter");
        spec.Agent = true; // vsock with CID 3 implied
        var vm = await s.Client.CreateVmAsync(new CreateVmRequest { Id = "ag", Spec = spec, Start = true });
        Assert.Equal(VmState.Running, vm.State);
        Assert.False(vm.AgentReady);

        var e = await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "true" } }).ResponseAsync);
        Assert.Contains("has not reported ready", e.Status.Detail);

        // Put the fake in the VM device's place and report ready.
        string uds = Path.Combine(s.Options.RunDir("ag"), "v.sock");
        Assert.True(File.Exists(uds));
        File.Delete(uds);
        using var vsock = new FakeHybridVsock(agent.SocketPath, uds);
        using var watch = s.Client.WatchEvents(new WatchEventsRequest { Id = "ag", IncludeSnapshot = true });
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            // The snapshot event: the watch is subscribed, so the next event cannot be missed.
            Assert.True(await watch.ResponseStream.MoveNext(cts.Token));
            Assert.Equal(EventType.Snapshot, watch.ResponseStream.Current.Type);
            await SendReadyAsync(uds + "_53");
            while (await watch.ResponseStream.MoveNext(cts.Token))
                if (watch.ResponseStream.Current.Type == EventType.AgentReady) break;
            Assert.False(cts.IsCancellationRequested, "no AGENT_READY event");
        }
        Assert.True((await s.Client.GetVmAsync(new GetVmRequest { Id = "ag" })).AgentReady);

        var reply = await s.Client.ExecAsync(new ExecRequest
        {
            Id = "ag",
            Argv = { "sh", "-c", "echo out $GREETING; echo err >&2; cat; exit 4" },
            Env = { ["GREETING"] = "hi" },
            Stdin = Google.Protobuf.ByteString.CopyFromUtf8("from stdin\n"),
        });
        Assert.Equal(4, reply.ExitCode);
        Assert.Equal("out hi\nfrom stdin\n", reply.Stdout.ToStringUtf8());
        Assert.Equal("err\n", reply.Stderr.ToStringUtf8());

        // timeout_seconds: the agent kills the command (SIGKILL: 128 + 9).
        var killed = await s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "sleep", "30" }, TimeoutSeconds = 1 });
        Assert.Equal(137, killed.ExitCode);
        // The call's deadline.
        await RpcAssert.FailsAsync(StatusCode.DeadlineExceeded,
            () => s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "sleep", "30" } }, deadline: DateTime.UtcNow.AddMilliseconds(500)).ResponseAsync);
        // A program that does not exist is the caller's mistake.
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "/no/such/program" } }).ResponseAsync, "argv");

        // A graceful stop asks the agent to shut down first (the fake-system agent then exits);
        // this guest ignores it, so the worker's stop follows after the grace period.
        var stopped = await s.Client.StopVmAsync(new StopVmRequest { Id = "ag", GracePeriodSeconds = 1 });
        Assert.Equal(VmState.Stopped, stopped.State);
        Assert.False(stopped.AgentReady);
        Assert.NotNull(await agent.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "true" } }).ResponseAsync);
    }
}
