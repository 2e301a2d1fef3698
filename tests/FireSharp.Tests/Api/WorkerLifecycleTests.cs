using FireSharp.Proto.V1;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>Worker death, daemon restart (adopt live workers, reap dead ones) and leftovers, with in-process workers.</summary>
[Collection("kvm")]
public sealed class WorkerLifecycleTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task A_worker_that_dies_fails_its_vm_with_the_reason()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "k", Spec = ApiTestServer.Spec("counter"), Start = true });
        s.Launcher.Kill(s.Options.WorkerSocket("k"));
        var vm = await s.WaitForStateAsync("k", VmState.Failed);
        Assert.Equal(ExitKind.WorkerDied, vm.Exit.Kind);
        Assert.Contains("in-process worker ended", vm.Exit.Reason);
        Assert.Equal(0, vm.WorkerPid);
        Assert.False(File.Exists(s.Options.WorkerSocket("k")));
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.PauseVmAsync(new PauseVmRequest { Id = "k" }).ResponseAsync);
        // A failed VM can be started again, or deleted.
        Assert.Equal(VmState.Running, (await s.Client.StartVmAsync(new StartVmRequest { Id = "k" })).State);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "k", Force = true });
        Assert.Empty(s.VmDirs());
    }

    [SkippableFact]
    public async Task A_restarted_daemon_adopts_live_workers_and_reaps_dead_ones()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "live", Spec = ApiTestServer.Spec("counter"), Start = true, Labels = { ["k"] = "v" } });
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "dead", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "done", Spec = ApiTestServer.Spec("hello"), Start = true });
        await s.WaitForStateAsync("done", VmState.Stopped);
        await s.ReadConsoleUntilAsync("live", "COUNTING");

        await s.StopServerAsync();
        s.Launcher.Kill(s.Options.WorkerSocket("dead")); // dies while no daemon watches
        // A create that never finished: a directory without a record.
        Directory.CreateDirectory(s.Options.VmDir("half"));
        await s.RestartAsync();

        var vms = (await s.Client.ListVmsAsync(new ListVmsRequest())).Vms.ToDictionary(v => v.Id);
        Assert.Equal(["dead", "done", "live"], vms.Keys.Order());
        Assert.Equal(VmState.Running, vms["live"].State);
        Assert.Equal("v", vms["live"].Labels["k"]);
        Assert.Equal(VmState.Failed, vms["dead"].State);
        Assert.Equal(ExitKind.WorkerDied, vms["dead"].Exit.Kind);
        Assert.Contains("gone when the daemon started", vms["dead"].Exit.Reason);
        Assert.Equal(VmState.Stopped, vms["done"].State);
        Assert.Equal(ExitKind.Reset, vms["done"].Exit.Kind);
        Assert.False(Directory.Exists(s.Options.VmDir("half")));

        // The adopted VM is fully controllable, console history included.
        Assert.Contains("COUNTING", await s.ReadConsoleUntilAsync("live", "COUNTING"));
        Assert.Contains("Hello", await s.ReadConsoleUntilAsync("done", "Hello"));
        Assert.Equal(VmState.Paused, (await s.Client.PauseVmAsync(new PauseVmRequest { Id = "live" })).State);
        Assert.Equal(VmState.Running, (await s.Client.ResumeVmAsync(new ResumeVmRequest { Id = "live" })).State);
        Assert.Equal(VmState.Stopped, (await s.Client.StopVmAsync(new StopVmRequest { Id = "live", Force = true })).State);
        foreach (var id in vms.Keys) await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = id });
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
    }

    [SkippableFact]
    public async Task A_record_left_in_creating_state_is_cleaned_up_at_start()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "c1", Spec = ApiTestServer.Spec("counter") });
        await s.StopServerAsync();
        // Pretend the daemon died in the middle of the create: the record still says CREATING.
        string path = Path.Combine(s.Options.VmDir("c1"), "vm.pb");
        var record = FireSharp.Proto.Worker.VmRecord.Parser.ParseFrom(File.ReadAllBytes(path));
        record.Vm.State = VmState.Creating;
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(record));
        await s.RestartAsync();
        Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        Assert.Empty(s.VmDirs());
        for (int i = 0; i < 500 && s.Launcher.LiveCount > 0; i++) await Task.Delay(10);
        Assert.Equal(0, s.Launcher.LiveCount);
    }
}
