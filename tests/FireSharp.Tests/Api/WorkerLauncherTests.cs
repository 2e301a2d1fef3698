using FireSharp.Daemon;
using FireSharp.Daemon.Workers;
using FireSharp.Worker;
using FireSharp.Worker.Protocol;
using FireSharp.Tests.Support;

using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Api;

/// <summary>
/// How the daemon starts a worker process: it waits for the worker's ready line (no polling), for at most its
/// configured start timeout, and reports a worker that ends or hangs while starting as UNAVAILABLE.
/// The "workers" here are shell scripts standing in for <c>firesharp-vmm</c>.
/// </summary>
public sealed class WorkerLauncherTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Script(string body)
    {
        string path = Path.Combine(_dir, "worker.sh");
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private Task<WorkerProcess> LaunchAsync(string script, TimeSpan? startTimeout = null) =>
        new ProcessWorkerLauncher(script, startTimeout: startTimeout)
            .LaunchAsync(new WorkerLaunch("w", Path.Combine(_dir, "worker.sock"), Path.Combine(_dir, "worker.log")), CancellationToken.None)
            .WaitAsync(Timeout);

    [Fact]
    public async Task A_worker_that_never_gets_ready_is_killed_after_the_configured_start_timeout()
    {
        string pidFile = Path.Combine(_dir, "pid");
        var e = await Assert.ThrowsAsync<VmApiException>(() => LaunchAsync(Script($"echo $$ > {pidFile}; exec sleep 60"), TimeSpan.FromSeconds(1)));
        Assert.Equal(VmErrorKind.Unavailable, e.Kind);
        Assert.Contains("within 1 s", e.Message);
        Assert.False(ProcInfo.IsAlive(int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Fact]
    public async Task A_worker_that_ends_while_starting_is_reported_with_its_exit_status()
    {
        // Many times: a worker that ends before the launcher has read its pid once raced the process's disposal.
        string script = Script("exit 3");
        for (int i = 0; i < 25; i++)
        {
            var e = await Assert.ThrowsAsync<VmApiException>(() => LaunchAsync(script));
            Assert.Equal(VmErrorKind.Unavailable, e.Kind);
            Assert.Contains("exited with status 3", e.Message);
        }
    }

    [Fact]
    public async Task A_worker_is_started_once_it_says_it_is_ready()
    {
        var worker = await LaunchAsync(Script($"echo {ProcessWorkerLauncher.ReadyLine}; exec sleep 60"));
        Assert.True(ProcInfo.IsAlive(worker.Pid));
        worker.Kill();
        Assert.Contains("killed by signal 9", (await worker.Exited.WaitAsync(Timeout)).Reason);
    }

    [Fact]
    public void The_start_timeout_is_configurable()
    {
        Assert.Equal(ProcessWorkerLauncher.DefaultStartTimeout, new DaemonOptions().WorkerStartTimeout);
        Assert.Equal(TimeSpan.FromSeconds(2), new ProcessWorkerLauncher("/bin/true", startTimeout: TimeSpan.FromSeconds(2)).StartTimeout);
    }
}
