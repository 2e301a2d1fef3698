using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Functions;

/// <summary>Log messages of <see cref="AgentFunctionVmFactory"/> and its VMs (event ids 320-329).</summary>
internal static partial class FunctionVmLog
{
    [LoggerMessage(320, LogLevel.Information, "function {Name} v{Version}: VM {Id} booted and initialized in {Ms:F0} ms (runtime init {InitMs:F1} ms)")]
    public static partial void LogBooted(ILogger logger, string name, string version, string id, double ms, double initMs);

    [LoggerMessage(321, LogLevel.Information, "function {Name} v{Version}: VM {Id} restored from its snapshot in {Ms:F0} ms")]
    public static partial void LogRestored(ILogger logger, string name, string version, string id, double ms);

    [LoggerMessage(322, LogLevel.Warning, "function {Name} v{Version}: restore from {Dir} failed, booting instead: {Error}")]
    public static partial void LogRestoreFailed(ILogger logger, string name, string version, string dir, string error);

    [LoggerMessage(323, LogLevel.Information, "function {Name} v{Version}: snapshot {Dir} taken in {Ms:F0} ms ({WrittenMib} MiB written)")]
    public static partial void LogSnapshot(ILogger logger, string name, string version, string dir, double ms, ulong writtenMib);

    [LoggerMessage(324, LogLevel.Warning, "function {Name} v{Version}: snapshot failed (the VM keeps serving): {Error}")]
    public static partial void LogSnapshotFailed(ILogger logger, string name, string version, string error);

    [LoggerMessage(325, LogLevel.Warning, "function VM {Id} ended before it was ready; booting another: {Error}")]
    public static partial void LogBootRetry(ILogger logger, string id, string error);

    [LoggerMessage(326, LogLevel.Warning, "could not delete {What}: {Error}")]
    public static partial void LogDeleteFailed(ILogger logger, string what, string error);

    [LoggerMessage(328, LogLevel.Warning, "function VM {Id}: could not bring the loopback interface up: {Error}")]
    public static partial void LogLoopback(ILogger logger, string id, string error);

    [LoggerMessage(327, LogLevel.Information, "deleted function VM {Id} left by an earlier daemon")]
    public static partial void LogOrphan(ILogger logger, string id);

    [LoggerMessage(329, LogLevel.Warning, "function VM {Id}: the agent did not close its connection within {Seconds:F0} s; snapshotting anyway")]
    public static partial void LogCloseUnconfirmed(ILogger logger, string id, double seconds);
}
