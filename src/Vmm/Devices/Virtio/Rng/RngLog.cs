using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Rng;

/// <summary>Log events of the entropy device, with stable ids (4400-4419).</summary>
internal static partial class RngLog
{
    [LoggerMessage(EventId = 4400, Level = LogLevel.Warning,
        Message = "{Device}: malformed request ({Reason}); returned unused (further ones are only counted)")]
    public static partial void BadRequest(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4401, Level = LogLevel.Debug,
        Message = "{Device}: {Requests} requests, {Bytes} bytes served, {Malformed} malformed, {Deferred} deferred by the rate limiter")]
    public static partial void Counters(ILogger logger, string device, long requests, long bytes, long malformed, long deferred);
}
