using System.Text;
using FireSharp.Proto.V1;
using Grpc.Core;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>Every VmService RPC against the in-process daemon with in-process workers and tiny guests.</summary>
[Collection("kvm")]
public sealed class VmServiceTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Create_get_list_delete_leaves_nothing_behind()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var request = new CreateVmRequest { Id = "vm-1", Spec = ApiTestServer.Spec("hello"), Labels = { ["team"] = "a", ["tier"] = "web" } };
        var vm = await s.Client.CreateVmAsync(request);
        Assert.Equal("vm-1", vm.Id);
        Assert.Equal(VmState.Created, vm.State);
        Assert.Equal(Environment.ProcessId, vm.WorkerPid);
        Assert.NotNull(vm.CreatedAt);
        Assert.Null(vm.StartedAt);
        Assert.Equal("web", vm.Labels["tier"]);
        Assert.True(File.Exists(Path.Combine(s.Options.VmDir("vm-1"), "vm.pb")));

        var got = await s.Client.GetVmAsync(new GetVmRequest { Id = "vm-1" });
        Assert.Equal(vm, got);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "vm-2", Spec = ApiTestServer.Spec("hello"), Labels = { ["team"] = "b" } });

        var all = await s.Client.ListVmsAsync(new ListVmsRequest());
        Assert.Equal(["vm-1", "vm-2"], all.Vms.Select(v => v.Id));
        var teamA = await s.Client.ListVmsAsync(new ListVmsRequest { LabelSelector = { ["team"] = "a" } });
        Assert.Equal("vm-1", Assert.Single(teamA.Vms).Id);
        var both = await s.Client.ListVmsAsync(new ListVmsRequest { LabelSelector = { ["team"] = "a", ["tier"] = "db" } });
        Assert.Empty(both.Vms);
        var created = await s.Client.ListVmsAsync(new ListVmsRequest { States = { VmState.Created } });
        Assert.Equal(2, created.Vms.Count);
        Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest { States = { VmState.Running } })).Vms);

        var deleted = await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "vm-1" });
        Assert.Equal("vm-1", deleted.Id);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "vm-2" });
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => s.Client.GetVmAsync(new GetVmRequest { Id = "vm-1" }).ResponseAsync, "id");
        Assert.Empty((await s.Client.ListVmsAsync(new ListVmsRequest())).Vms);
        Assert.Empty(s.VmDirs());
        Assert.Equal(0, s.Launcher.LiveCount);
    }

    [SkippableFact]
    public async Task A_vm_with_drives_is_created_with_them()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        string dir = ApiTestServer.NewStateDir();
        try
        {
            string root = Path.Combine(dir, "root.img"), data = Path.Combine(dir, "data.img");
            using (var f = File.Create(root)) f.SetLength(1 << 20);
            using (var f = File.Create(data)) f.SetLength(1 << 20);
            var spec = ApiTestServer.Spec("hello");
            spec.Drives.Add(new DriveSpec { Id = "root", Path = root, Root = true });
            spec.Drives.Add(new DriveSpec { Id = "data", Path = data, ReadOnly = true });
            var vm = await s.Client.CreateVmAsync(new CreateVmRequest { Id = "disks", Spec = spec, Start = true });
            Assert.Equal(["root", "data"], vm.Spec.Drives.Select(d => d.Id));
            Assert.Equal(ExitKind.Reset, (await s.WaitForStateAsync("disks", VmState.Stopped)).Exit.Kind);
            await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "disks" });
            Assert.True(File.Exists(root)); // the user's images are the user's
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public async Task A_guest_that_resets_is_stopped_and_its_console_is_kept()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "hello", Spec = ApiTestServer.Spec("hello") });
        var started = await s.Client.StartVmAsync(new StartVmRequest { Id = "hello" });
        Assert.Contains(started.State, new[] { VmState.Running, VmState.Stopped });

        var vm = await s.WaitForStateAsync("hello", VmState.Stopped);
        Assert.Equal(ExitKind.Reset, vm.Exit.Kind);
        Assert.True(vm.Exit.Clean);
        Assert.NotNull(vm.StartedAt);
        Assert.Contains("Hello from FireSharp tiny guest", await s.ReadConsoleUntilAsync("hello", "tiny guest"));
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "hello" });
        Assert.Equal(0, s.Launcher.LiveCount);
    }

    [SkippableFact]
    public async Task Create_with_start_runs_the_guest()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var vm = await s.Client.CreateVmAsync(new CreateVmRequest { Id = "boot", Spec = ApiTestServer.Spec("boot-timer"), Start = true });
        Assert.NotEqual(VmState.Created, vm.State);
        var done = await s.WaitForStateAsync("boot", VmState.Stopped);
        Assert.True(done.BootTimeMs > 0, "the boot-done signal was recorded");
    }

    [SkippableFact]
    public async Task Pause_resume_and_stop_by_force_after_the_grace_period()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "counter", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.ReadConsoleUntilAsync("counter", "COUNTING");

        Assert.Equal(VmState.Paused, (await s.Client.PauseVmAsync(new PauseVmRequest { Id = "counter" })).State);
        Assert.Equal(VmState.Running, (await s.Client.ResumeVmAsync(new ResumeVmRequest { Id = "counter" })).State);

        // counter.elf ignores Ctrl-Alt-Del, so the stop is forced after the 1 s grace period.
        var stopped = await s.Client.StopVmAsync(new StopVmRequest { Id = "counter", GracePeriodSeconds = 1 });
        Assert.Equal(VmState.Stopped, stopped.State);
        Assert.Equal(ExitKind.Stopped, stopped.Exit.Kind);
        Assert.Contains("grace period", stopped.Exit.Reason);

        // A stopped VM starts again in a fresh worker.
        var again = await s.Client.StartVmAsync(new StartVmRequest { Id = "counter" });
        Assert.Equal(VmState.Running, again.State);
        Assert.Null(again.Exit);
        Assert.Equal(2, s.Launcher.Launched);
        var forced = await s.Client.StopVmAsync(new StopVmRequest { Id = "counter", Force = true });
        Assert.Equal(VmState.Stopped, forced.State);
        Assert.Equal("stopped by the host", forced.Exit.Reason);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "counter" });
        Assert.Equal(0, s.Launcher.LiveCount);
        Assert.Empty(s.VmDirs());
    }

    [SkippableFact]
    public async Task A_paused_vm_is_stopped_by_force()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "p", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.Client.PauseVmAsync(new PauseVmRequest { Id = "p" });
        var stopped = await s.Client.StopVmAsync(new StopVmRequest { Id = "p", GracePeriodSeconds = 600 });
        Assert.Equal(VmState.Stopped, stopped.State);
        Assert.Equal(ExitKind.Stopped, stopped.Exit.Kind);
    }

    [SkippableFact]
    public async Task A_triple_fault_fails_the_vm()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "tf", Spec = ApiTestServer.Spec("triple-fault"), Start = true });
        var vm = await s.WaitForStateAsync("tf", VmState.Failed);
        Assert.Equal(ExitKind.TripleFault, vm.Exit.Kind);
        Assert.False(vm.Exit.Clean);
    }

    [SkippableFact]
    public async Task Watch_events_reports_the_whole_life_of_a_vm()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "old", Spec = ApiTestServer.Spec("hello") });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var all = s.Client.WatchEvents(new WatchEventsRequest { IncludeSnapshot = true }, cancellationToken: cts.Token);
        Assert.True(await all.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(EventType.Snapshot, all.ResponseStream.Current.Type);
        Assert.Equal("old", all.ResponseStream.Current.Id);
        Assert.Equal(VmState.Created, all.ResponseStream.Current.State);

        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "b", Spec = ApiTestServer.Spec("boot-timer"), Start = true });
        await s.WaitForStateAsync("b", VmState.Stopped);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "b" });

        var seen = new List<VmEvent>();
        while (await all.ResponseStream.MoveNext(cts.Token))
        {
            seen.Add(all.ResponseStream.Current);
            if (all.ResponseStream.Current.Type == EventType.Deleted) break;
        }
        var types = seen.Where(e => e.Id == "b").Select(e => e.Type).ToList();
        Assert.Equal(EventType.Created, types[0]);
        Assert.Contains(EventType.BootDone, types);
        Assert.Contains(EventType.Exited, types);
        Assert.Equal(EventType.Deleted, types[^1]);
        Assert.True(types.IndexOf(EventType.BootDone) < types.IndexOf(EventType.Exited));
        var exited = seen.First(e => e.Type == EventType.Exited);
        Assert.Equal(ExitKind.Reset, exited.Exit.Kind);
        Assert.Contains(seen, e => e.Type == EventType.StateChanged && e.State == VmState.Running);
        Assert.DoesNotContain(seen, e => e.Id == "old");
        Assert.True(seen.Zip(seen.Skip(1)).All(p => p.First.Time.ToDateTime() <= p.Second.Time.ToDateTime()));
    }

    [SkippableFact]
    public async Task Watch_events_of_one_vm_and_cancellation_ends_the_watch()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "w", Spec = ApiTestServer.Spec("hello") });
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "other", Spec = ApiTestServer.Spec("hello") });
        using var cts = new CancellationTokenSource();
        using var call = s.Client.WatchEvents(new WatchEventsRequest { Id = "w", IncludeSnapshot = true }, cancellationToken: cts.Token);
        // The snapshot event shows the watch is in place (and names only the watched VM).
        Assert.True(await call.ResponseStream.MoveNext(cts.Token).WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(EventType.Snapshot, call.ResponseStream.Current.Type);
        Assert.Equal("w", call.ResponseStream.Current.Id);
        await s.Client.StartVmAsync(new StartVmRequest { Id = "other" });
        await s.Client.StartVmAsync(new StartVmRequest { Id = "w" });
        Assert.True(await call.ResponseStream.MoveNext(cts.Token).WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal("w", call.ResponseStream.Current.Id);
        Assert.Equal(EventType.StateChanged, call.ResponseStream.Current.Type);

        Assert.Equal(1, s.Manager.Events.WatcherCount);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<Exception>(async () => { while (await call.ResponseStream.MoveNext(CancellationToken.None)) { } });
        for (int i = 0; i < 500 && s.Manager.Events.WatcherCount > 0; i++) await Task.Delay(10);
        Assert.Equal(0, s.Manager.Events.WatcherCount);
    }

    [SkippableFact]
    public async Task Console_streams_live_output_and_accepts_input()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "c", Spec = ApiTestServer.Spec("counter") });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var call = s.Client.StreamConsole(cancellationToken: cts.Token);
        // Replay: the attach may complete after the guest has printed (there is no attach acknowledgement).
        await call.RequestStream.WriteAsync(new ConsoleRequest { Id = "c", Replay = true, Input = Google.Protobuf.ByteString.CopyFromUtf8("x") });
        await s.Client.StartVmAsync(new StartVmRequest { Id = "c" });
        var text = new StringBuilder();
        while (!text.ToString().Contains("COUNTING") && await call.ResponseStream.MoveNext(cts.Token))
            text.Append(Encoding.UTF8.GetString(call.ResponseStream.Current.Data.Span));
        Assert.Contains("COUNTING", text.ToString());
        await call.RequestStream.WriteAsync(new ConsoleRequest { Input = Google.Protobuf.ByteString.CopyFromUtf8("more input\n") });
        await call.RequestStream.CompleteAsync();

        // The guest's end closes the console stream.
        await s.Client.StopVmAsync(new StopVmRequest { Id = "c", Force = true });
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "c" });
        while (await call.ResponseStream.MoveNext(cts.Token)) { }
        Assert.False(cts.IsCancellationRequested);
    }

    [SkippableFact]
    public async Task Exec_says_honestly_that_there_is_no_agent()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "e", Spec = ApiTestServer.Spec("hello") });
        var e = await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.ExecAsync(new ExecRequest { Id = "e", Argv = { "/bin/true" } }).ResponseAsync);
        Assert.Contains("agent not available", e.Status.Detail);
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => s.Client.ExecAsync(new ExecRequest { Id = "nope", Argv = { "/bin/true" } }).ResponseAsync, "id");
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => s.Client.ExecAsync(new ExecRequest { Id = "e" }).ResponseAsync, "argv");
    }

    [SkippableFact]
    public async Task A_vm_with_the_agent_gets_a_vsock_socket_and_exec_waits_for_the_agent_to_be_ready()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var spec = ApiTestServer.Spec("hello");
        spec.Agent = true; // no agent answers in this guest: never ready
        spec.Vsock = new VsockSpec { GuestCid = 7 };
        var vm = await s.Client.CreateVmAsync(new CreateVmRequest { Id = "ag", Spec = spec });
        Assert.False(vm.AgentReady);
        Assert.Single(s.VmDirs());
        string dir = s.Options.RunDir("ag"); // the VM's sockets directory (a jailed worker may create files only there)
        Assert.True(File.Exists(Path.Combine(dir, "v.sock")), "the worker creates the hybrid vsock socket in the VM's run directory");
        Assert.True(File.Exists(Path.Combine(dir, "v.sock_53")), "the daemon listens for the agent's ready report");
        var e = await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.ExecAsync(new ExecRequest { Id = "ag", Argv = { "/bin/true" } }).ResponseAsync);
        Assert.Contains("agent not available", e.Status.Detail);
        await s.Client.DeleteVmAsync(new DeleteVmRequest { Id = "ag", Force = true });
        Assert.Empty(s.VmDirs());

        // Only vsock: a device, no agent.
        var plain = ApiTestServer.Spec("hello");
        plain.Vsock = new VsockSpec { GuestCid = 9 };
        await s.Client.CreateVmAsync(new CreateVmRequest { Id = "vs", Spec = plain });
        Assert.Single(s.VmDirs());
        dir = s.Options.RunDir("vs");
        Assert.True(File.Exists(Path.Combine(dir, "v.sock")));
        Assert.False(File.Exists(Path.Combine(dir, "v.sock_53")));
        e = await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => s.Client.ExecAsync(new ExecRequest { Id = "vs", Argv = { "/bin/true" } }).ResponseAsync);
        Assert.Contains("without the guest agent", e.Status.Detail);
    }

    [SkippableFact]
    public async Task Reflection_lists_the_services_and_health_is_serving()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var reflection = new Grpc.Reflection.V1Alpha.ServerReflection.ServerReflectionClient(s.Channel);
        using var call = reflection.ServerReflectionInfo();
        await call.RequestStream.WriteAsync(new Grpc.Reflection.V1Alpha.ServerReflectionRequest { ListServices = "" });
        Assert.True(await call.ResponseStream.MoveNext());
        var services = call.ResponseStream.Current.ListServicesResponse.Service.Select(x => x.Name).ToList();
        Assert.Contains("firesharp.v1.VmService", services);
        Assert.Contains("grpc.health.v1.Health", services);

        // grpcurl's next step: the file that defines a symbol, with its methods.
        await call.RequestStream.WriteAsync(new Grpc.Reflection.V1Alpha.ServerReflectionRequest { FileContainingSymbol = "firesharp.v1.VmService" });
        Assert.True(await call.ResponseStream.MoveNext());
        var file = Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(call.ResponseStream.Current.FileDescriptorResponse.FileDescriptorProto[0]);
        Assert.Equal("firesharp/v1/vm.proto", file.Name);
        Assert.Contains("StreamConsole", file.Service.Single().Method.Select(m => m.Name));
        await call.RequestStream.CompleteAsync();

        var health = new Grpc.Health.V1.Health.HealthClient(s.Channel);
        var reply = await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest());
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, reply.Status);
    }
}
