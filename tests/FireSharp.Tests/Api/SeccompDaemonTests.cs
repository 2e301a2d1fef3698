using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// The worker's seccomp filter through the real daemon (build/firesharp, `make build`): on by default, so every
/// DaemonProcessTests and SnapshotDaemonTests case runs with it; here its status in /proc, that a pause/resume,
/// snapshot and restore still work under it, and that a forbidden call (the test-only trigger) kills the worker with
/// SIGSYS and shows as EXIT_KIND_SECCOMP with the syscall's number.
/// </summary>
[Collection("kvm")]
public sealed class SeccompDaemonTests(ITestOutputHelper output)
{
    private const int SIGUSR2 = 12;

    [SkippableFact]
    public async Task A_running_worker_is_filtered_and_pause_resume_snapshot_and_restore_still_work()
    {
        await using var d = await DaemonUnderTest.StartAsync(output);
        var spec = ApiTestServer.Spec("counter");
        spec.Vsock = new VsockSpec { GuestCid = 3 };
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "f", Spec = spec, Start = true });
        await d.ReadConsoleUntilAsync("f", "COUNTING");
        // The vsock device's host side under the filter: the worker accepts a connection and reads its CONNECT
        // line (the tiny guest has no driver, so nobody answers; the worker must live on).
        using (var host = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
        {
            await host.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(Path.Combine(d.StateDir, "run", "f", "v.sock"))).WaitAsync(TimeSpan.FromSeconds(10));
            await host.SendAsync("CONNECT 52\n"u8.ToArray()).WaitAsync(TimeSpan.FromSeconds(10));
            await Task.Delay(200);
        }
        var status = Status(vm.WorkerPid);
        Assert.Equal("2", status["Seccomp"]); // SECCOMP_MODE_FILTER
        Assert.Equal("1", status["NoNewPrivs"]);

        Assert.Equal(VmState.Paused, (await d.Client.PauseVmAsync(new PauseVmRequest { Id = "f" })).State);
        Assert.Equal(VmState.Running, (await d.Client.ResumeVmAsync(new ResumeVmRequest { Id = "f" })).State);
        string snap = Path.Combine(d.StateDir, "snap");
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "f", Dir = snap, Resume = true, TrackDirty = true });
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "f", Dir = snap + "-diff", Resume = true, Diff = true });
        var restored = await d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "r" });
        Assert.Equal(VmState.Running, restored.State);
        Assert.Equal("2", Status(restored.WorkerPid)["Seccomp"]);
        // The restored worker runs the guest on (the counter prints only at boot): a snapshot of it works too.
        await d.Client.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "r", Dir = snap + "-r", Resume = true });
        var paused = await d.Client.RestoreVmAsync(new RestoreVmRequest { Dir = snap + "-diff", Id = "p", Paused = true });
        Assert.Equal("2", Status(paused.WorkerPid)["Seccomp"]);
        Assert.Equal(VmState.Running, (await d.Client.ResumeVmAsync(new ResumeVmRequest { Id = "p" })).State);

        foreach (var id in (string[])["f", "r", "p"])
        {
            var v = await d.Client.GetVmAsync(new GetVmRequest { Id = id });
            Assert.True(v.State == VmState.Running, $"{id}: {v.State} {v.Exit}");
            Assert.Equal(VmState.Stopped, (await d.Client.StopVmAsync(new StopVmRequest { Id = id, Force = true })).State);
            await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = id });
        }
        d.AssertNothingLeft();
    }

    [SkippableTheory]
    [InlineData("execve", 59)]
    [InlineData("socket", 41)]
    public async Task A_forbidden_syscall_kills_the_worker_and_the_api_shows_the_seccomp_exit(string trigger, int syscall)
    {
        await using var d = await DaemonUnderTest.StartAsync(output, [$"--SeccompTestTrigger={trigger}"]);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "victim", Spec = ApiTestServer.Spec("counter"), Start = true });
        await d.ReadConsoleUntilAsync("victim", "COUNTING");
        Assert.Equal("2", Status(vm.WorkerPid)["Seccomp"]);

        ProcInfo.SendSignal(vm.WorkerPid, SIGUSR2);
        var failed = await d.WaitForStateAsync("victim", VmState.Failed);
        Assert.Equal(ExitKind.Seccomp, failed.Exit.Kind);
        Assert.Contains("SIGSYS", failed.Exit.Reason);
        Assert.False(failed.Exit.Clean);
        Assert.Equal(0, failed.WorkerPid);
        // Root reads the kernel log here; the audit record names the call.
        Assert.NotNull(ProcInfo.ReadKernelLog());
        Assert.True(failed.Exit.HasSyscall, failed.Exit.Reason);
        Assert.Equal(syscall, failed.Exit.Syscall);
        Assert.Contains($"syscall {syscall} ({trigger})", failed.Exit.Reason);

        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "victim" });
        d.AssertNothingLeft();
    }

    [SkippableFact]
    public async Task Seccomp_off_leaves_the_worker_unfiltered()
    {
        await using var d = await DaemonUnderTest.StartAsync(output, ["--Seccomp=false"]);
        var vm = await d.Client.CreateVmAsync(new CreateVmRequest { Id = "plain", Spec = ApiTestServer.Spec("counter"), Start = true });
        await d.ReadConsoleUntilAsync("plain", "COUNTING");
        Assert.Equal("0", Status(vm.WorkerPid)["Seccomp"]);
        await d.Client.DeleteVmAsync(new DeleteVmRequest { Id = "plain", Force = true });
        d.AssertNothingLeft();
    }

    /// <summary>/proc/PID/status as name → value (Seccomp, NoNewPrivs, ...).</summary>
    internal static Dictionary<string, string> Status(int pid) =>
        File.ReadAllLines($"/proc/{pid}/status").Select(l => l.Split(':', 2)).Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1].Trim());
}
