using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using FireSharp.Proto.Worker;

using FireSharp.Kvm.Interop;
using FireSharp.Worker.Protocol;

namespace FireSharp.Daemon.Workers;

/// <summary>A running worker as the daemon sees it: a process (or, in tests, an in-process stand-in) and its socket.</summary>
public abstract class WorkerProcess
{
    /// <summary>
    /// The process that runs the VM: it is moved into the VM's cgroup before the first request
    /// (<see cref="Isolation.VmCgroups.Enter"/>), so a launcher that wraps the worker (a jail) must give the worker's
    /// own pid here, not its wrapper's.
    /// </summary>
    public required int Pid { get; init; }
    /// <summary>Field 22 of /proc/&lt;pid&gt;/stat; with the pid it identifies the process across daemon restarts.</summary>
    public required ulong StartTime { get; init; }
    public required string SocketPath { get; init; }

    /// <summary>
    /// Completes when the process has ended: a human-readable reason and, when known, the signal that killed it; a
    /// death by the seccomp filter (SIGSYS) comes with the refused syscall (see <see cref="SeccompKills"/>). A jailer
    /// that wraps the worker must report the worker's own end here.
    /// </summary>
    public abstract Task<WorkerExit> Exited { get; }

    /// <summary>Kills the worker at once (SIGKILL).</summary>
    public abstract void Kill();

    public WorkerRecord ToRecord() => new() { Pid = Pid, StartTime = StartTime, Socket = SocketPath };
}

/// <summary>
/// What to start: the VM's worker listening on <paramref name="SocketPath"/>, logging to <paramref name="LogPath"/>;
/// jailed as <paramref name="Jail"/> says (written to <paramref name="JailPlanPath"/>), or not when it is null.
/// </summary>
public sealed record WorkerLaunch(string VmId, string SocketPath, string LogPath)
{
    public JailPlan? Jail { get; init; }
    public string? JailPlanPath { get; init; }
}

/// <summary>Starts workers and finds them again after a daemon restart.</summary>
public interface IWorkerLauncher
{
    /// <summary>
    /// Starts a worker that will listen on <see cref="WorkerLaunch.SocketPath"/> and returns once the socket accepts
    /// connections. The returned <see cref="WorkerProcess.Pid"/> is the process that runs the VM (inside its jail, if
    /// any): the one to kill, adopt, or put in a cgroup.
    /// </summary>
    Task<WorkerProcess> LaunchAsync(WorkerLaunch launch, CancellationToken ct);

    /// <summary>The worker described by a record if that very process is still alive; otherwise null.</summary>
    WorkerProcess? Adopt(WorkerRecord record);
}

/// <summary>
/// Runs each worker as <c>firesharp-vmm --socket PATH --log PATH --id ID</c> (by default the
/// <c>firesharp-vmm</c> next to the daemon's own executable). The worker puts itself in a session of its own,
/// so a terminal's Ctrl-C or the daemon's death does not reach it. It says <see cref="ReadyLine"/> on its
/// stdout (a pipe to the daemon) once its socket accepts connections, so nobody polls for the socket.
/// With <paramref name="seccomp"/> the worker installs its seccomp filter before the guest first runs
/// (<c>--seccomp</c>); <paramref name="seccompTestTrigger"/> is for tests only (see DaemonOptions.SeccompTestTrigger).
/// </summary>
public sealed class ProcessWorkerLauncher(string binaryPath, string? logLevel = null, TimeSpan? startTimeout = null,
    bool seccomp = false, string? seccompTestTrigger = null) : IWorkerLauncher
{
    public static readonly TimeSpan DefaultStartTimeout = TimeSpan.FromSeconds(30);

    /// <summary>What a worker writes on its stdout when its socket is listening (then it closes that pipe).</summary>
    public const string ReadyLine = WorkerStartup.ReadyLine;

    public string BinaryPath { get; } = binaryPath;

    /// <summary>The worker executable beside this process's own: <c>firesharp-vmm</c>.</summary>
    public static string DefaultBinary() =>
        Path.Combine(Path.GetDirectoryName(Environment.ProcessPath) ?? AppContext.BaseDirectory, "firesharp-vmm");

    /// <summary>How long a worker may take to report <see cref="ReadyLine"/> before it is killed and the start fails.</summary>
    public TimeSpan StartTimeout { get; } = startTimeout ?? DefaultStartTimeout;

    public async Task<WorkerProcess> LaunchAsync(WorkerLaunch launch, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(launch);
        string socketPath = launch.SocketPath;
        if (!File.Exists(BinaryPath)) throw VmApiException.Unavailable($"the worker binary {BinaryPath} does not exist");
        if (launch.Jail is { } plan)
        {
            if (launch.JailPlanPath is null) throw new ArgumentException("a jailed launch needs JailPlanPath", nameof(launch));
            AtomicFile.Replace(launch.JailPlanPath, Google.Protobuf.MessageExtensions.ToByteArray(plan));
        }
        var psi = new ProcessStartInfo(BinaryPath)
        {
            UseShellExecute = false,
            RedirectStandardInput = false,
            RedirectStandardOutput = true, // the ready line; the worker points its stdout at its log after that
            RedirectStandardError = false,
        };
        if (launch.JailPlanPath is not null && launch.Jail is not null) { psi.ArgumentList.Add("--jail"); psi.ArgumentList.Add(launch.JailPlanPath); }
        foreach (var a in (string[])["--socket", socketPath, "--log", launch.LogPath, "--id", launch.VmId]) psi.ArgumentList.Add(a);
        if (logLevel is not null) { psi.ArgumentList.Add("--log-level"); psi.ArgumentList.Add(logLevel); }
        if (seccomp) psi.ArgumentList.Add("--seccomp");
        if (seccomp && seccompTestTrigger is not null) { psi.ArgumentList.Add("--seccomp-test-trigger"); psi.ArgumentList.Add(seccompTestTrigger); }
        var process = Process.Start(psi) ?? throw VmApiException.Unavailable("the worker process did not start");
        var ready = process.StandardOutput;
        var exit = new ChildExit(process);
        var worker = new ChildWorker(exit, exit.ChildPid, socketPath);
        try
        {
            await WaitForReadyAsync(ready, socketPath, worker.Exited, ct).ConfigureAwait(false);
            // A jailed worker is unshare(1)'s child, in a pid namespace of its own: the kernel names it to us.
            if (launch.Jail is null) return worker;
            exit.JailedPid = await PeerPidAsync(socketPath, ct).ConfigureAwait(false);
            worker = new ChildWorker(exit, exit.JailedPid, socketPath);
            return worker;
        }
        catch
        {
            worker.Kill();
            await worker.Exited.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
            throw;
        }
        finally
        {
            ready.Dispose();
            exit.StartEnded();
        }
    }

    /// <summary>Waits for the worker's ready line; its end, a closed pipe or the time running out fail the start.</summary>
    private async Task WaitForReadyAsync(StreamReader ready, string socketPath, Task<WorkerExit> exited, CancellationToken ct)
    {
        string? line;
        try
        {
            line = await ready.ReadLineAsync(ct).AsTask().WaitAsync(StartTimeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw VmApiException.Unavailable($"the worker did not open {socketPath} within {StartTimeout.TotalSeconds:F0} s (WorkerStartTimeoutSeconds)");
        }
        if (line == ReadyLine) return;
        // A jailed worker's stage 1 refused the snapshot to restore: the same typed error as the daemon's own refusal.
        if (line is not null && WorkerStartup.TryParseSnapshotRefused(line, out var reason, out var message)
            && Enum.TryParse<FireSharp.Snapshot.SnapshotErrorReason>(reason, out var parsed))
            throw SnapshotErrors.ToApi(new FireSharp.Snapshot.SnapshotException(parsed, message));
        if (line is not null) throw VmApiException.Unavailable($"the worker said '{line}' instead of '{ReadyLine}' while starting");
        // End of file: the worker ended, or closed its stdout without saying it was ready.
        string why = await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(5), ct)).ConfigureAwait(false) == exited
            ? (await exited.ConfigureAwait(false)).Reason
            : "it closed its stdout without reporting ready";
        throw VmApiException.Unavailable($"the worker ended while starting: {why}");
    }

    /// <summary>The pid (in this process's pid namespace) of the process that listens on <paramref name="socketPath"/> (SO_PEERCRED).</summary>
    public static async Task<int> PeerPidAsync(string socketPath, CancellationToken ct)
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
        int pid = PeerCredentials.Of(socket)?.Pid ?? 0;
        if (pid <= 0) throw VmApiException.Unavailable($"cannot tell which process listens on {socketPath} (SO_PEERCRED gave {pid})");
        return pid;
    }

    public WorkerProcess? Adopt(WorkerRecord record)
    {
        if (record.Pid <= 0 || ProcInfo.StartTime(record.Pid) != record.StartTime) return null;
        return new AdoptedWorker { Pid = record.Pid, StartTime = record.StartTime, SocketPath = record.Socket };
    }

    /// <summary>A worker this daemon started: its exit status is known.</summary>
    /// <remarks>
    /// A jailed worker is the child of the process started here (unshare(1), which waits for it and ends with it):
    /// <see cref="WorkerProcess.Pid"/> is then the worker itself, and unshare's exit status stands for the worker's
    /// (util-linux 2.38 reports a SIGKILL of its child as status 1, so that end is named by the pid only).
    /// </remarks>
    private sealed class ChildWorker : WorkerProcess
    {
        private readonly ChildExit _exit;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public ChildWorker(ChildExit exit, int pid, string socketPath)
        {
            _exit = exit;
            Pid = pid;
            StartTime = ProcInfo.StartTime(pid) ?? 0;
            SocketPath = socketPath;
        }

        public override Task<WorkerExit> Exited => _exit.Exited;

        public override void Kill()
        {
            if (Pid != _exit.ChildPid && ProcInfo.StartTime(Pid) == StartTime) ProcInfo.SendSignal(Pid, ProcInfo.SIGKILL);
            _exit.Kill();
        }
    }

    /// <summary>The process this daemon started for a worker, and how it ended.</summary>
    private sealed class ChildExit
    {
        private readonly Process _process;

        public ChildExit(Process process)
        {
            _process = process;
            ChildPid = process.Id;
            Exited = WaitAsync();
            // Disposing the process closes its stdout; that waits until the start no longer reads the ready line,
            // so a worker that ends at once cannot pull the pipe from under LaunchAsync.
            _ = Task.WhenAll(Exited, _startEnded.Task).ContinueWith(_ => process.Dispose(), TaskScheduler.Default);
        }

        private readonly TaskCompletionSource _startEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>LaunchAsync no longer reads the child's stdout.</summary>
        public void StartEnded() => _startEnded.TrySetResult();

        public int ChildPid { get; }

        /// <summary>The jailed worker under the child, once known (0: the child is the worker).</summary>
        public int JailedPid { get; set; }

        public Task<WorkerExit> Exited { get; }

        private async Task<WorkerExit> WaitAsync()
        {
            await _process.WaitForExitAsync().ConfigureAwait(false);
            int code = _process.ExitCode;
            int pid = JailedPid != 0 ? JailedPid : ChildPid;
            // .NET reports death by signal N as 128 + N. A jailed worker's end comes through unshare, which reports
            // a child killed by a signal as status 1: the kernel's seccomp record for the worker's pid tells then.
            int signal = code > 128 ? code - 128 : 0;
            if (signal == WorkerExit.SIGSYS || (JailedPid != 0 && signal == 0 && SeccompKills.FindSyscall(ProcInfo.ReadKernelLog(), pid) is not null))
                return await SeccompKills.DescribeAsync(pid).ConfigureAwait(false);
            if (signal != 0) return new WorkerExit($"worker process {pid} was killed by signal {signal}", signal);
            return new WorkerExit(JailedPid != 0
                ? $"worker process {pid} ended; its jail's unshare (pid {ChildPid}) exited with status {code}"
                : $"worker process {pid} exited with status {code}");
        }

        public void Kill()
        {
            try { _process.Kill(); }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { }
        }
    }

    /// <summary>A worker started by an earlier daemon: not our child, so it is watched through /proc.</summary>
    private sealed class AdoptedWorker : WorkerProcess
    {
        private Task<WorkerExit>? _exited;

        public override Task<WorkerExit> Exited => _exited ??= PollAsync();

        private async Task<WorkerExit> PollAsync()
        {
            while (ProcInfo.StartTime(Pid) == StartTime) await Task.Delay(100).ConfigureAwait(false);
            // Not our child: no exit status. A seccomp kill still shows in the kernel log.
            if (SeccompKills.FindSyscall(ProcInfo.ReadKernelLog(), Pid) is not null) return await SeccompKills.DescribeAsync(Pid).ConfigureAwait(false);
            return new WorkerExit($"worker process {Pid} ended (it was adopted after a daemon restart, so its exit status is unknown)");
        }

        public override void Kill()
        {
            if (ProcInfo.StartTime(Pid) == StartTime) ProcInfo.SendSignal(Pid, ProcInfo.SIGKILL);
        }
    }
}
