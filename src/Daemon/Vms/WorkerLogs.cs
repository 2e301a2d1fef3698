using FireSharp.Daemon.Logs;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// A VM's logs while its worker runs (docs/observability.md, "Logs"): the worker's own log relayed into the daemon's
/// (<see cref="WorkerLogRelay"/>) and the guest's console kept in a capped file (<see cref="ConsoleFile"/>), both in
/// the VM's directory, so both outlive the worker and go when the VM is deleted.
/// </summary>
internal sealed class WorkerLogs(DaemonOptions options, ILoggerFactory? loggers, ILogger logger)
{
    private readonly ILoggerFactory _loggers = loggers ?? NullLoggerFactory.Instance;

    public static string WorkerLogPath(VmEntry entry) => Path.Combine(entry.Dir, WorkerLogRelay.FileName);
    public static string ConsolePath(VmEntry entry) => Path.Combine(entry.Dir, ConsoleFile.FileName);

    /// <summary>Starts relaying the session's worker log from <see cref="WorkerSession.LogStart"/>, until the worker ends or the daemon lets go.</summary>
    public void StartRelay(VmEntry entry, WorkerSession session)
    {
        var relay = new WorkerLogRelay(entry.Id, WorkerLogPath(entry), session.LogStart, _loggers, options.LogLimits);
        session.LogRelay = relay.RunAsync(session.Process.Exited, session.Cts.Token);
    }

    /// <summary>Relays what a worker that failed to start wrote.</summary>
    public void RelayOnce(string id, string path, long start)
    {
        using var relay = new WorkerLogRelay(id, path, start, _loggers, options.LogLimits);
        relay.Pump();
    }

    /// <summary>Waits (at most <paramref name="wait"/>) for the session's relay and console copy to end: the session's token is cancelled or its worker is gone.</summary>
    public static async Task EndAsync(WorkerSession session, TimeSpan wait)
    {
        var tasks = new[] { session.LogRelay, session.ConsoleRecorder }.OfType<Task>().ToArray();
        if (tasks.Length > 0) await Task.WhenAny(Task.WhenAll(tasks), Task.Delay(wait)).ConfigureAwait(false);
    }

    /// <summary>Starts copying the session's console into console.log (unless ConsoleLogMaxBytes is 0).</summary>
    public void StartConsole(VmEntry entry, WorkerSession session, bool replay)
    {
        if (options.ConsoleLogMaxBytes <= 0) return;
        session.ConsoleRecorder = ConsoleFile.RecordAsync(entry.Id, session.Client, ConsolePath(entry), options.ConsoleLogMaxBytes, replay, logger, session.Cts.Token);
    }
}
