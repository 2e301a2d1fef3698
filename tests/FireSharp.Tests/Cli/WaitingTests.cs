using FireSharp.Cli;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Cli;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// <c>--wait</c> and <c>--timeout</c>: the wait's state machine and the option grammar on their own, then the commands
/// against the in-process daemon with tiny guests (boot-timer signals boot-done; counter never does).
/// </summary>
[Collection("kvm")]
public sealed class WaitingTests(ITestOutputHelper output)
{
    private static Vm Reply(VmState state, double bootMs = 0, bool agent = false, bool agentReady = false) =>
        new() { Id = "v", State = state, BootTimeMs = bootMs, AgentReady = agentReady, Spec = new VmSpec { Agent = agent } };

    private static VmEvent Event(EventType type, VmState state) => new() { Id = "v", Type = type, State = state };

    [Fact]
    public void Running_is_met_by_the_calls_reply()
    {
        var t = new WaitTracker("v", WaitFor.Running, restored: false);
        Assert.Equal(WaitStatus.Done, t.Observe(Reply(VmState.Running)));
    }

    [Fact]
    public void Boot_waits_for_the_boot_done_event_and_counts_it_even_after_the_guest_ended()
    {
        var t = new WaitTracker("v", WaitFor.Boot, restored: false);
        Assert.Equal(WaitStatus.Pending, t.Observe(Reply(VmState.Running)));
        Assert.Equal("running", t.Progress);
        Assert.Equal(WaitStatus.Done, t.Observe(Event(EventType.BootDone, VmState.Running)));
        Assert.Equal(WaitStatus.Done, t.Observe(Event(EventType.Exited, VmState.Stopped)));

        // A reply that carries the boot time already (the guest booted before the call returned).
        Assert.Equal(WaitStatus.Done, new WaitTracker("v", WaitFor.Boot, false).Observe(Reply(VmState.Stopped, bootMs: 12.5)));
    }

    [Fact]
    public void A_vm_that_ends_first_fails_the_wait_with_its_exit()
    {
        var t = new WaitTracker("v", WaitFor.Boot, restored: false);
        t.Observe(Reply(VmState.Running));
        var exited = Event(EventType.Exited, VmState.Failed);
        exited.Exit = new VmExitInfo { Kind = ExitKind.TripleFault, Reason = "triple fault" };
        Assert.Equal(WaitStatus.Failed, t.Observe(exited));
        Assert.Equal(StatusCode.Aborted, t.FailureCode);
        Assert.Contains("VM v failed before it could boot: triple-fault (triple fault)", t.Failure);

        var deleted = new WaitTracker("v", WaitFor.Agent, restored: false);
        deleted.Observe(Reply(VmState.Running, agent: true));
        Assert.Equal(WaitStatus.Failed, deleted.Observe(Event(EventType.Deleted, VmState.Stopped)));
        Assert.Contains("deleted", deleted.Failure);
    }

    [Fact]
    public void Agent_needs_an_agent_and_waits_for_its_ready_event()
    {
        var none = new WaitTracker("v", WaitFor.Agent, restored: false);
        Assert.Equal(WaitStatus.Failed, none.Observe(Reply(VmState.Running, agent: false)));
        Assert.Equal(StatusCode.FailedPrecondition, none.FailureCode);
        Assert.Contains("--agent", none.Failure);

        var t = new WaitTracker("v", WaitFor.Agent, restored: false);
        Assert.Equal(WaitStatus.Pending, t.Observe(Reply(VmState.Running, agent: true)));
        Assert.Equal(WaitStatus.Pending, t.Observe(Event(EventType.BootDone, VmState.Running)));
        Assert.Equal(WaitStatus.Done, t.Observe(Event(EventType.AgentReady, VmState.Running)));
        Assert.Equal(WaitStatus.Done, new WaitTracker("v", WaitFor.Agent, false).Observe(Reply(VmState.Running, agent: true, agentReady: true)));
    }

    [Fact]
    public void A_restored_vm_has_booted_once_it_runs_but_not_when_left_paused()
    {
        Assert.Equal(WaitStatus.Done, new WaitTracker("v", WaitFor.Boot, restored: true).Observe(Reply(VmState.Running)));
        var paused = new WaitTracker("v", WaitFor.Boot, restored: true);
        Assert.Equal(WaitStatus.Failed, paused.Observe(Reply(VmState.Paused)));
        Assert.Contains("paused", paused.Failure);
    }

    [Theory]
    [InlineData("90", 90_000)]
    [InlineData("90s", 90_000)]
    [InlineData("500ms", 500)]
    [InlineData("1.5m", 90_000)]
    [InlineData("2h", 7_200_000)]
    [InlineData("0", 0)]
    public void Timeout_takes_durations(string text, long ms)
    {
        Assert.True(Deadlines.TryParse(text, out var t));
        Assert.Equal(TimeSpan.FromMilliseconds(ms), t);
    }

    [Theory]
    [InlineData("soon")]
    [InlineData("-1")]
    [InlineData("5d")]
    [InlineData("")]
    public void Timeout_refuses_what_is_not_a_duration(string text) => Assert.False(Deadlines.TryParse(text, out _));

    [Fact]
    public void The_option_grammar_and_the_default_budgets()
    {
        var root = new System.CommandLine.RootCommand { VmClientCommands.Create(), FunctionCommands.Create(), SnapshotCommands.Create() };

        var start = root.Parse(["vm", "start", "myvm", "--wait"]);
        Assert.Empty(start.Errors);
        Assert.Equal(WaitFor.Running, Waiting.Requested(start));
        Assert.Equal("myvm", start.GetValue<string>("id"));
        // `--wait ID` would take the id for the kind: an error that says how to write it.
        Assert.Contains(root.Parse(["vm", "start", "--wait", "myvm"]).Errors, e => e.Message.Contains("--wait=KIND", StringComparison.Ordinal));
        Assert.Equal(WaitFor.Agent, Waiting.Requested(root.Parse(["vm", "start", "myvm", "--wait=agent"])));
        Assert.Equal(WaitFor.Boot, Waiting.Requested(root.Parse(["snapshot", "restore", "/s", "--wait", "boot"])));
        Assert.Equal(WaitFor.None, Waiting.Requested(root.Parse(["vm", "start", "myvm"])));
        Assert.NotEmpty(root.Parse(["vm", "get", "x", "--timeout", "soon"]).Errors);

        Assert.Null(Deadlines.Given(root.Parse(["vm", "get", "x"])));
        Assert.Equal(TimeSpan.FromSeconds(5), Deadlines.Given(root.Parse(["vm", "get", "x", "--timeout", "5s"])));
        Assert.Equal(Deadlines.CallBudget, Deadlines.Budget(root.Parse(["vm", "get", "x"])));
        Assert.Equal(TimeSpan.FromSeconds(30) + Deadlines.CallBudget, Deadlines.Budget(root.Parse(["vm", "stop", "x", "--grace", "30"])));
        Assert.Equal(TimeSpan.FromSeconds(10) + Deadlines.CallBudget, Deadlines.Budget(root.Parse(["vm", "stop", "x"])));
        Assert.Null(Deadlines.Budget(root.Parse(["vm", "exec", "x", "true"])));
        Assert.Null(Deadlines.For(root.Parse(["vm", "get", "x", "--timeout", "0"])));
        Assert.Equal(Deadlines.LongCallBudget, Deadlines.Budget(root.Parse(["snapshot", "create", "x", "/d"])));
    }

    [SkippableFact]
    public async Task Create_wait_boot_returns_once_booted_and_a_timeout_is_one_line_and_exit_1()
    {
        await using var s = await ApiTestServer.StartAsync(output);

        // boot-timer signals boot-done, then resets: the wait is met (and --wait implies --start).
        var (code, err) = s.RunCli("vm", "create", "bt", "--kernel", TestPaths.Guest("boot-timer"), "--mem-mib", "16", "--wait=boot");
        output.WriteLine(err);
        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.Contains("waiting for VM bt to boot", err);
        Assert.True((await s.Client.GetVmAsync(new GetVmRequest { Id = "bt" })).BootTimeMs > 0);

        // counter runs and never signals boot-done.
        (code, err) = s.RunCli("vm", "create", "ct", "--kernel", TestPaths.Guest("counter"), "--mem-mib", "16", "--wait=boot", "--timeout", "3s");
        output.WriteLine(err);
        Assert.Equal(1, code);
        Assert.Contains("timed out after 3 s waiting for VM ct to boot (running)", err);
        Assert.Equal(VmState.Running, (await s.Client.GetVmAsync(new GetVmRequest { Id = "ct" })).State);

        // --wait=agent of a VM without the agent: refused before anything is created.
        (code, err) = s.RunCli("vm", "create", "na", "--kernel", TestPaths.Guest("counter"), "--mem-mib", "16", "--wait=agent");
        Assert.Equal(2, code);
        Assert.Contains("--wait=agent needs --agent", err);
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => s.Client.GetVmAsync(new GetVmRequest { Id = "na" }).ResponseAsync);

        // start --wait=running of a stopped VM.
        await s.Client.StopVmAsync(new StopVmRequest { Id = "ct", Force = true });
        (code, err) = s.RunCli("vm", "start", "ct", "--wait");
        Assert.True(code == 0, $"exit {code}: {err}");
        Assert.Equal(VmState.Running, (await s.Client.GetVmAsync(new GetVmRequest { Id = "ct" })).State);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "ct", Force = true });
    }
}
