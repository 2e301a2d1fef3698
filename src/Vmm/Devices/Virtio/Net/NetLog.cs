using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>Log events of the virtio-net device, with stable ids (4300-4319).</summary>
internal static partial class NetLog
{
    [LoggerMessage(EventId = 4300, Level = LogLevel.Error, Message = "{Device}: event loop failed; the device stopped")]
    public static partial void LoopFailed(ILogger logger, Exception exception, string device);

    [LoggerMessage(EventId = 4301, Level = LogLevel.Warning, Message = "{Device}: dropped a {Direction} frame ({Reason}); further ones are only counted")]
    public static partial void Dropped(ILogger logger, string device, string direction, string reason);

    [LoggerMessage(EventId = 4302, Level = LogLevel.Error, Message = "{Device}: backend {Backend} failed ({Error}); no more frames are read from it")]
    public static partial void BackendFailed(ILogger logger, string device, string backend, string error);

    [LoggerMessage(EventId = 4305, Level = LogLevel.Debug,
        Message = "{Device}: rx {RxFrames} frames / {RxBytes} bytes ({RxDropped} dropped), tx {TxFrames} frames / {TxBytes} bytes ({TxDropped} dropped)")]
    public static partial void Counters(ILogger logger, string device, long rxFrames, long rxBytes, long rxDropped, long txFrames, long txBytes, long txDropped);

    [LoggerMessage(EventId = 4306, Level = LogLevel.Information, Message = "{Device}: driver ready, features 0x{Features:x}, receive offloads {Offloads}")]
    public static partial void Activated(ILogger logger, string device, ulong features, NetOffloads offloads);

    [LoggerMessage(EventId = 4307, Level = LogLevel.Warning, Message = "{Device}: cannot set receive offloads on {Backend}: {Error}")]
    public static partial void OffloadFailed(ILogger logger, string device, string backend, string error);
}
