using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Cli;

/// <summary>Log events of <c>firesharp run</c>, with stable ids (7000-7019).</summary>
internal static partial class RunLog
{
    [LoggerMessage(EventId = 7000, Level = LogLevel.Information, Message = "guest ended after {Ms:F1} ms: {Exit}")]
    public static partial void GuestEnded(ILogger logger, double ms, VmExit exit);

    [LoggerMessage(EventId = 7001, Level = LogLevel.Warning, Message = "cannot listen for the agent's ready report at {Path}: {Message}")]
    public static partial void AgentReadyUnavailable(ILogger logger, string path, string message);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Warning,
        Message = "guest agent {Version} ready after {Ms:F0} ms; run commands with: firesharp agent exec --vsock {Path} -- CMD")]
    public static partial void AgentReady(ILogger logger, string? version, double ms, string path);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Information,
        Message = "restore: guest running {Ms:F2} ms after the restore began (CLOCK_MONOTONIC {Ns} ns)")]
    public static partial void RestoredRunning(ILogger logger, double ms, long ns);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Information,
        Message = "snapshot written to {Dir}: {Written} KiB of {Total} MiB memory, vCPUs paused {Paused:F1} ms")]
    public static partial void SnapshotWritten(ILogger logger, string dir, ulong written, ulong total, double paused);
}
