using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Logging;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp run --jail</c> (and <c>--worker</c>): the daemon's way of running a VM, tried by hand. A private
/// daemon core (<see cref="VmManager"/>, no API socket) on a temporary state directory runs the VM in a
/// <c>firesharp-vmm</c> worker, jailed (docs/isolation.md) or not, exactly as <c>firesharp serve</c> would; the
/// console streams to stdout until the guest ends (or <c>--exit-after-ms</c>); then the VM, its worker and the
/// state directory go, and the worker's log is copied to stderr. The jail needs root. Each run has its own state
/// directory, so two concurrent <c>run --jail</c> get the same first uid of the range (a daemon gives every VM its own).
/// </summary>
internal static partial class RunJailed
{
    private const string Id = "run";

    public static int Execute(VmConfig? config, RunSnapshotOptions.Settings snap, bool jail, LogLevel level)
    {
        if (jail && !Environment.IsPrivilegedProcess) return Fail("--jail needs root (the jailer mounts, pivot_roots and changes uid)");
        if (snap.SnapshotDir is not null) return Fail("--jail/--worker take --restore and --exit-after-ms, not --snapshot-dir (snapshot through `firesharp serve`)");
        if (config is null && snap.RestoreDir is null) return Fail("--kernel or --restore is required");
        // A worker restores only an authenticated snapshot (its jailer, or the worker itself, verifies it).
        if (snap.RestoreDir is not null && snap.SnapshotKeyPath is null)
            return Fail("--jail/--worker --restore needs --snapshot-key FILE|DIR (the key the snapshot was signed with; a daemon's are in <StateDir>/snapshot-keys): "
                + "a worker never restores an unauthenticated snapshot, so --insecure-unauthenticated does not apply");
        string? keys = snap.SnapshotKeyPath is { } k ? Path.GetFullPath(k) : null;
        return RunAsync(config, snap.RestoreDir is { } r ? Path.GetFullPath(r) : null, keys, snap.ExitAfterMs, jail, level).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(VmConfig? config, string? restoreDir, string? snapshotKeys, int? exitAfterMs, bool jail, LogLevel level)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        string suffix = Guid.NewGuid().ToString("N")[..8];
        string state = Path.Combine("/tmp", "firesharp-run-" + suffix);
        // A cgroup parent of its own: a daemon reaps every cgroup under its parent that it does not know.
        // The paths come from the command line of the user running this (root, for a jail), not from an API client: any is allowed.
        var options = new DaemonOptions
        {
            StateDir = state, Socket = Path.Combine(state, "api.sock"), Jail = jail, CgroupParent = "firesharp-run-" + suffix, SnapshotKeysPath = snapshotKeys,
            AllowedPathRoots = ["/"],
        };
        using var stop = new CancellationTokenSource();
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        var logger = new StderrLogger(level);
        var manager = new VmManager(options, new ProcessWorkerLauncher(ProcessWorkerLauncher.DefaultBinary(), level.ToString()), HostLimits.Detect(), NullLogger<VmManager>.Instance);
        bool timedOut = false;
        try
        {
            await manager.InitializeAsync(CancellationToken.None).ConfigureAwait(false);
            long call = System.Diagnostics.Stopwatch.GetTimestamp();
            var vm = restoreDir is not null
                ? await manager.RestoreAsync(new RestoreVmCommand(Id, restoreDir), CancellationToken.None).ConfigureAwait(false)
                : await manager.CreateAsync(new CreateVmCommand(Id, config!) { Start = true }, CancellationToken.None).ConfigureAwait(false);
            long running = System.Diagnostics.Stopwatch.GetTimestamp();
            LogRunning(logger, System.Diagnostics.Stopwatch.GetElapsedTime(call, running).TotalMilliseconds, System.Diagnostics.Stopwatch.GetElapsedTime(started, running).TotalMilliseconds,
                running, vm.WorkerPid, jail, jail ? options.JailDir(Id) : "-");
            if (exitAfterMs is { } ms) stop.CancelAfter(ms);
            await using (var console = await manager.AttachConsoleAsync(Id, replay: true, CancellationToken.None).ConfigureAwait(false))
            {
                using var stdout = Console.OpenStandardOutput();
                try
                {
                    await foreach (var chunk in console.ReadAllAsync(stop.Token).ConfigureAwait(false))
                        await stdout.WriteAsync(chunk.Data.Memory, stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { }
            }
            if (stop.IsCancellationRequested)
            {
                timedOut = exitAfterMs is not null;
                await manager.StopAsync(Id, 1, force: true, CancellationToken.None).ConfigureAwait(false);
            }
            vm = manager.Get(Id);
            for (int i = 0; i < 100 && vm.Phase is not (VmPhase.Stopped or VmPhase.Failed); i++)
            {
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                vm = manager.Get(Id);
            }
            if (timedOut || vm.End is { Clean: true }) return RunCommand.ExitClean;
            return Fail($"guest failed: {vm.End?.Kind} {vm.End?.Reason}", RunCommand.ExitGuestFailed);
        }
        catch (VmApiException e)
        {
            return Fail(e.Message);
        }
        finally
        {
            CopyWorkerLog(options); // before the delete, which removes the VM's directory with its log
            try { await manager.DeleteAsync(Id, force: true, CancellationToken.None).ConfigureAwait(false); }
            catch (VmApiException) { }
            await manager.DisposeAsync().ConfigureAwait(false);
            RemoveCgroupParent(options);
            try { Directory.Delete(state, recursive: true); }
            catch (IOException) { }
        }
    }

    /// <summary>The worker's own log (its restore timings, its errors) goes to stderr, as an in-process run's would.</summary>
    private static void CopyWorkerLog(DaemonOptions options)
    {
        try
        {
            foreach (var log in Directory.EnumerateFiles(options.VmsDir, FireSharp.Daemon.Logs.WorkerLogRelay.FileName, SearchOption.AllDirectories))
                foreach (var line in File.ReadLines(log))
                    Console.Error.WriteLine(FireSharp.Daemon.Logs.WorkerLogLine.Parse(line).Render()); // JSON lines, for people
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static void RemoveCgroupParent(DaemonOptions options)
    {
        foreach (var dir in Directory.Exists(options.CgroupRoot) ? Directory.GetDirectories(options.CgroupRoot) : [])
        {
            string parent = Path.Combine(dir, options.CgroupParent);
            try { if (Directory.Exists(parent)) Directory.Delete(parent); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        string v2 = Path.Combine(options.CgroupRoot, options.CgroupParent);
        try { if (Directory.Exists(v2)) Directory.Delete(v2); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static int Fail(string message, int code = RunCommand.ExitBadInput)
    {
        Console.Error.WriteLine($"firesharp: {message}");
        return code;
    }

    [LoggerMessage(EventId = 7010, Level = LogLevel.Warning,
        Message = "VM running {CallMs:F1} ms after the create/restore call, {ProcessMs:F1} ms after the command began (CLOCK_MONOTONIC {Ns} ns); worker {Pid}, jailed {Jailed}, jail {Jail}")]
    private static partial void LogRunning(ILogger logger, double callMs, double processMs, long ns, int pid, bool jailed, string jail);
}
