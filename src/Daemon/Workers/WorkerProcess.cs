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

/// <summary>Starts workers and finds them again after a daemon restart.</summary>
public interface IWorkerLauncher
{
    /// <summary>
    /// Starts a worker that will listen on <paramref name="socketPath"/> and returns once the socket accepts
    /// connections. <paramref name="logPath"/> receives the worker's own log.
    /// </summary>
    Task<WorkerProcess> LaunchAsync(string vmId, string socketPath, string logPath, CancellationToken ct);

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

    public async Task<WorkerProcess> LaunchAsync(string vmId, string socketPath, string logPath, CancellationToken ct)
    {
        if (!File.Exists(BinaryPath)) throw VmApiException.Unavailable($"the worker binary {BinaryPath} does not exist");
        var psi = new ProcessStartInfo(BinaryPath)
        {
            UseShellExecute = false,
            RedirectStandardInput = false,
            RedirectStandardOutput = true, // the ready line; the worker points its stdout at its log after that
            RedirectStandardError = false,
        };
        foreach (var a in (string[])["--socket", socketPath, "--log", logPath, "--id", vmId]) psi.ArgumentList.Add(a);
        if (logLevel is not null) { psi.ArgumentList.Add("--log-level"); psi.ArgumentList.Add(logLevel); }
        if (seccomp) psi.ArgumentList.Add("--seccomp");
        if (seccomp && seccompTestTrigger is not null) { psi.ArgumentList.Add("--seccomp-test-trigger"); psi.ArgumentList.Add(seccompTestTrigger); }
        var process = Process.Start(psi) ?? throw VmApiException.Unavailable("the worker process did not start");
        var ready = process.StandardOutput;
        var worker = new ChildWorker(process, socketPath);
        try
        {
            await WaitForReadyAsync(ready, socketPath, worker.Exited, ct).ConfigureAwait(false);
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
        if (line is not null) throw VmApiException.Unavailable($"the worker said '{line}' instead of '{ReadyLine}' while starting");
        // End of file: the worker ended, or closed its stdout without saying it was ready.
        string why = await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(5), ct)).ConfigureAwait(false) == exited
            ? (await exited.ConfigureAwait(false)).Reason
            : "it closed its stdout without reporting ready";
        throw VmApiException.Unavailable($"the worker ended while starting: {why}");
    }

    public WorkerProcess? Adopt(WorkerRecord record)
    {
        if (record.Pid <= 0 || ProcInfo.StartTime(record.Pid) != record.StartTime) return null;
        return new AdoptedWorker { Pid = record.Pid, StartTime = record.StartTime, SocketPath = record.Socket };
    }

    /// <summary>A worker this daemon started: its exit status is known.</summary>
    private sealed class ChildWorker : WorkerProcess
    {
        private readonly Process _process;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public ChildWorker(Process process, string socketPath)
        {
            _process = process;
            Pid = process.Id;
            StartTime = ProcInfo.StartTime(process.Id) ?? 0;
            SocketPath = socketPath;
            Exited = WaitAsync();
        }

        public override Task<WorkerExit> Exited { get; }

        private async Task<WorkerExit> WaitAsync()
        {
            await _process.WaitForExitAsync().ConfigureAwait(false);
            int code = _process.ExitCode;
            _process.Dispose();
            // .NET reports death by signal N as 128 + N.
            int signal = code > 128 ? code - 128 : 0;
            if (signal == WorkerExit.SIGSYS) return await SeccompKills.DescribeAsync(Pid).ConfigureAwait(false);
            return signal != 0
                ? new WorkerExit($"worker process {Pid} was killed by signal {signal}", signal)
                : new WorkerExit($"worker process {Pid} exited with status {code}");
        }

        public override void Kill()
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
