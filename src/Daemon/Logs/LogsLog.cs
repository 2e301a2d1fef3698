using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Logs;

/// <summary>Log messages of the VMs' logs: the worker log relayed, its storms, the console files (event ids 1400-1419).</summary>
internal static partial class LogsLog
{
    /// <summary>A worker's line, at the worker's level, under the worker's category (the VM's id also in the text, for journald).</summary>
    [LoggerMessage(EventId = 1400, Message = "VM {VmId}: {WorkerMessage}")]
    public static partial void WorkerLine(ILogger logger, LogLevel level, string vmId, string workerMessage);

    [LoggerMessage(1401, LogLevel.Warning, "VM {VmId}: {Dropped} worker log lines dropped (more than {Rate} a second: WorkerLogLinesPerSecond); worker.log keeps them")]
    public static partial void LinesDropped(ILogger logger, string vmId, long dropped, int rate);

    [LoggerMessage(1402, LogLevel.Warning, "VM {VmId}: cannot read its worker log: {Error}")]
    public static partial void RelayFailed(ILogger logger, string vmId, string error);

    [LoggerMessage(1403, LogLevel.Warning, "VM {VmId}: cannot keep its console output in {Path}: {Error}")]
    public static partial void ConsoleFailed(ILogger logger, string vmId, string path, string error);
}
