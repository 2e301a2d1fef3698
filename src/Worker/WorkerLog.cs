using FireSharp.Proto.Worker;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>Log events of the per-VM worker, with stable ids (5000-5019).</summary>
internal static partial class WorkerLog
{
    [LoggerMessage(EventId = 5000, Level = LogLevel.Error, Message = "worker: cannot serve {Socket}: {Error}")]
    public static partial void CannotServe(ILogger logger, string socket, string error);

    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "worker {Id}: shutting down ({Why})")]
    public static partial void ShuttingDown(ILogger logger, string id, string why);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Information, Message = "worker {Id}: machine created ({Mib} MiB, {Vcpus} vCPU, kernel {Kernel})")]
    public static partial void Created(ILogger logger, string id, ulong mib, int vcpus, string kernel);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Information, Message = "worker {Id}: machine restored from {Dir} ({State})")]
    public static partial void Restored(ILogger logger, string id, string dir, string state);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Information, Message = "worker {Id}: sent Ctrl-Alt-Del; waiting up to {Ms} ms")]
    public static partial void SentCtrlAltDel(ILogger logger, string id, int ms);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Information, Message = "worker {Id}: stopping the vCPUs")]
    public static partial void StoppingVcpus(ILogger logger, string id);

    [LoggerMessage(EventId = 5006, Level = LogLevel.Information,
        Message = "worker {Id}: snapshot {Dir} taken ({Written} of {Total} memory bytes written) in {Ms:F1} ms")]
    public static partial void SnapshotTaken(ILogger logger, string id, string dir, ulong written, ulong total, double ms);

    [LoggerMessage(EventId = 5007, Level = LogLevel.Information, Message = "worker {Id}: guest ended: {Exit}")]
    public static partial void GuestEnded(ILogger logger, string id, VmExit exit);

    [LoggerMessage(EventId = 5008, Level = LogLevel.Error, Message = "worker {Id}: releasing the ended machine failed")]
    public static partial void ReleaseFailed(ILogger logger, Exception exception, string id);

    [LoggerMessage(EventId = 5009, Level = LogLevel.Error, Message = "worker {Id}: {Request} failed")]
    public static partial void RequestFailed(ILogger logger, Exception exception, string id, WorkerRequest.RequestOneofCase request);
}
