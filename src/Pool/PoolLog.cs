using Microsoft.Extensions.Logging;

namespace FireSharp.Pool;

/// <summary>The pool's log messages (event ids 800-819).</summary>
internal static partial class PoolLog
{
    [LoggerMessage(800, LogLevel.Information, "function {Name}: created (version {Version})")]
    public static partial void Created(ILogger logger, string name, string version);

    [LoggerMessage(801, LogLevel.Information, "function {Name}: updated to version {Version}")]
    public static partial void Updated(ILogger logger, string name, string version);

    [LoggerMessage(802, LogLevel.Information, "function {Name}: deleting")]
    public static partial void Deleting(ILogger logger, string name);

    [LoggerMessage(803, LogLevel.Information, "function {Name}: deleted")]
    public static partial void Deleted(ILogger logger, string name);

    [LoggerMessage(804, LogLevel.Warning, "pool background task failed: {Error}")]
    public static partial void BackgroundFailed(ILogger logger, string error);

    [LoggerMessage(805, LogLevel.Warning, "function {Name}: VM {Vm} shutdown failed: {Error}")]
    public static partial void ShutdownFailed(ILogger logger, string name, string vm, string error);

    [LoggerMessage(806, LogLevel.Warning, "function {Name}: creating a provisioned VM failed: {Error}")]
    public static partial void ProvisionFailed(ILogger logger, string name, string error);

    [LoggerMessage(807, LogLevel.Information, "function {Name}: VM {Vm} recycled after {Status}")]
    public static partial void Recycled(ILogger logger, string name, string vm, VmInvokeStatus status);

    [LoggerMessage(808, LogLevel.Debug, "idle reaper shut down {Count} VMs")]
    public static partial void Reaped(ILogger logger, int count);

    [LoggerMessage(809, LogLevel.Warning, "function {Name}: discarding snapshots failed: {Error}")]
    public static partial void DiscardFailed(ILogger logger, string name, string error);

    [LoggerMessage(810, LogLevel.Information, "function pool disposed")]
    public static partial void Disposed(ILogger logger);
}
