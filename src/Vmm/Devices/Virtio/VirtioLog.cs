using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio;

/// <summary>Log events of the virtio devices, with stable ids (4000-4099).</summary>
internal static partial class VirtioLog
{
    [LoggerMessage(EventId = 4001, Level = LogLevel.Warning,
        Message = "{Device}: guest driver error, device needs reset (DEVICE_NEEDS_RESET): {Reason}")]
    public static partial void NeedsReset(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Warning,
        Message = "{Device}: refusing FEATURES_OK: {Reason}")]
    public static partial void FeaturesRefused(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug,
        Message = "{Device}: driver ready (DRIVER_OK), features 0x{Features:x}")]
    public static partial void DriverOk(ILogger logger, string device, ulong features);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "{Device}: reset by the driver")]
    public static partial void Reset(ILogger logger, string device);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Error,
        Message = "{Device}: device error while processing queue {Queue}; device needs reset")]
    public static partial void DeviceFault(ILogger logger, Exception exception, string device, int queue);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Warning,
        Message = "{Device}: host I/O error ({Operation} at byte {Offset}): {Error}; the guest gets IOERR (further errors are not logged)")]
    public static partial void HostIoError(ILogger logger, string device, string operation, ulong offset, string error);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Warning,
        Message = "{Device}: malformed request ({Reason}); completed with IOERR (further ones are not logged)")]
    public static partial void BadRequest(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4008, Level = LogLevel.Error, Message = "{Device}: worker thread failed")]
    public static partial void WorkerFailed(ILogger logger, Exception exception, string device);

    [LoggerMessage(EventId = 4009, Level = LogLevel.Information,
        Message = "{Device}: at 0x{Address:x}, GSI {Gsi}; notify by {Notify}, interrupt by {Interrupt}")]
    public static partial void Placed(ILogger logger, string device, ulong address, uint gsi, string notify, string interrupt);

    [LoggerMessage(EventId = 4011, Level = LogLevel.Debug,
        Message = "{Device}: {Requests} requests, {BytesRead} bytes read, {BytesWritten} bytes written, {Flushes} flushes")]
    public static partial void BlockCounters(ILogger logger, string device, long requests, long bytesRead, long bytesWritten, long flushes);

    [LoggerMessage(EventId = 4010, Level = LogLevel.Warning,
        Message = "{Device}: {Mechanism} unavailable ({Error}); falling back to exits through the VMM")]
    public static partial void FallBack(ILogger logger, string device, string mechanism, string error);
}
