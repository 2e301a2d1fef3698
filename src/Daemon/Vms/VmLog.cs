using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>The VM manager's log messages (one list, so event ids stay unique).</summary>
internal static partial class VmLog
{
    [LoggerMessage(1, LogLevel.Information, "VM {Id} created ({MemMib} MiB, {Vcpus} vCPU)")]
    public static partial void Created(ILogger logger, string id, long memMib, int vcpus);

    [LoggerMessage(2, LogLevel.Information, "VM {Id} deleted")]
    public static partial void Deleted(ILogger logger, string id);

    [LoggerMessage(3, LogLevel.Warning, "VM {Id}: {Reason}")]
    public static partial void WorkerDied(ILogger logger, string id, string reason);

    [LoggerMessage(4, LogLevel.Information, "VM {Id}: adopted worker {Pid} ({State})")]
    public static partial void Adopted(ILogger logger, string id, int pid, VmPhase state);

    [LoggerMessage(5, LogLevel.Warning, "VM {Id}: worker {Pid} is alive but does not answer ({Error}); killed it")]
    public static partial void AdoptFailed(ILogger logger, string id, int pid, string error);

    [LoggerMessage(6, LogLevel.Information, "VM {Id}: its worker is gone; marked as such")]
    public static partial void Reaped(ILogger logger, string id);

    [LoggerMessage(7, LogLevel.Warning, "removed {Dir}: a VM create that never finished")]
    public static partial void RemovedHalfCreated(ILogger logger, string dir);

    [LoggerMessage(8, LogLevel.Error, "cannot read {Path}: {Error}; the VM is left out until the file is fixed or removed")]
    public static partial void CorruptRecord(ILogger logger, string path, string error);

    [LoggerMessage(9, LogLevel.Error, "cannot write {Path}: {Error}")]
    public static partial void PersistFailed(ILogger logger, string path, string error);

    [LoggerMessage(10, LogLevel.Warning, "VM {Id}: the worker did not shut down cleanly ({Error}); killing it")]
    public static partial void ShutdownRefused(ILogger logger, string id, string error);

    [LoggerMessage(11, LogLevel.Error, "VM {Id}: worker {Pid} did not die after SIGKILL")]
    public static partial void WorkerWouldNotDie(ILogger logger, string id, int pid);

    [LoggerMessage(40, LogLevel.Information, "VM {Id}: the guest agent is ready")]
    public static partial void AgentReady(ILogger logger, string id);

    [LoggerMessage(41, LogLevel.Warning, "VM {Id}: the guest agent did not take the shutdown request ({Error}); using Ctrl-Alt-Del")]
    public static partial void AgentShutdownFailed(ILogger logger, string id, string error);

    [LoggerMessage(42, LogLevel.Warning, "VM {Id}: the guest took fresh entropy but could not reseed its CRNG")]
    public static partial void NotReseeded(ILogger logger, string id);

    [LoggerMessage(43, LogLevel.Warning, "VM {Id}: the guest agent did not take fresh entropy after the restore ({Error}); its RNG state is the snapshot's")]
    public static partial void ReseedRefused(ILogger logger, string id, string error);

    [LoggerMessage(12, LogLevel.Information, "VM {Id}: {Count} rate limiter(s) replaced")]
    public static partial void RateLimitersUpdated(ILogger logger, string id, int count);
    [LoggerMessage(62, LogLevel.Debug, "VM {Id}: worker {Pid} launched (jailed: {Jailed}) in {Ms:F1} ms")]
    public static partial void WorkerLaunched(ILogger logger, string id, int pid, bool jailed, double ms);

    [LoggerMessage(60, LogLevel.Information, "removed {Dir}: its VM no longer exists")]
    public static partial void JailReaped(ILogger logger, string dir);

    [LoggerMessage(61, LogLevel.Warning, "cannot remove {Dir}: {Error}")]
    public static partial void JailNotRemoved(ILogger logger, string dir, string error);

    [LoggerMessage(63, LogLevel.Warning, "VM {Id}: its drives cannot be locked again ({Error}); it runs on without the lock")]
    public static partial void DriveLockLost(ILogger logger, string id, string error);
}
