using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>Log events of the vsock device, with stable ids (4200-4219).</summary>
internal static partial class VsockLog
{
    [LoggerMessage(EventId = 4200, Level = LogLevel.Error, Message = "{Device}: event loop failed; the device stopped")]
    public static partial void LoopFailed(ILogger logger, Exception exception, string device);

    [LoggerMessage(EventId = 4201, Level = LogLevel.Warning,
        Message = "{Device}: malformed or unexpected packet from the guest ({Reason}); further ones are not logged")]
    public static partial void BadPacket(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4202, Level = LogLevel.Warning,
        Message = "{Device}: connection refused: {Connections} of at most {Max} connections open, {ReservedKib} of {BudgetKib} KiB of buffers reserved ({Suppressed} more refusals not logged since the last)")]
    public static partial void ConnectionRefused(ILogger logger, string device, int connections, int max, long reservedKib, long budgetKib, long suppressed);

    [LoggerMessage(EventId = 4203, Level = LogLevel.Debug, Message = "{Device}: guest connection to host port {Port} refused: {Path}: {Error}")]
    public static partial void GuestConnectFailed(ILogger logger, string device, uint port, string path, string error);

    [LoggerMessage(EventId = 4204, Level = LogLevel.Debug, Message = "{Device}: host client refused: {Reason}")]
    public static partial void BadConnectLine(ILogger logger, string device, string reason);

    [LoggerMessage(EventId = 4205, Level = LogLevel.Debug, Message = "{Device}: {PacketsIn} packets in, {PacketsOut} packets out, {Rsts} RSTs sent")]
    public static partial void Counters(ILogger logger, string device, long packetsIn, long packetsOut, long rsts);

    [LoggerMessage(EventId = 4208, Level = LogLevel.Debug, Message = "{Device}: host connection to guest port {Port} timed out waiting for the guest")]
    public static partial void ConnectTimedOut(ILogger logger, string device, uint port);
}
