using FireSharp.Framing;
using Google.Protobuf;

namespace FireSharp.Worker.Protocol;

/// <summary>
/// The daemon-worker wire format: FireSharp's one framing (<see cref="Frames"/>: a 4-byte little-endian length,
/// then that many bytes of protobuf; see src/Proto/firesharp/worker/v1/worker.proto) with the worker's frame limit.
/// </summary>
public static class WorkerFraming
{
    /// <summary>Largest frame accepted; a bigger length means a broken or hostile peer.</summary>
    public const int MaxFrameBytes = 1 << 20;

    public static async ValueTask WriteAsync(Stream stream, IMessage message, CancellationToken ct)
    {
        await stream.WriteAsync(Frames.Encode(message, MaxFrameBytes), ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Reads one message; null at a clean end of stream (EOF before a frame starts).</summary>
    public static async ValueTask<T?> ReadAsync<T>(Stream stream, MessageParser<T> parser, CancellationToken ct)
        where T : class, IMessage<T>
    {
        var payload = await Frames.ReadOneAsync(stream, MaxFrameBytes, ct).ConfigureAwait(false);
        return payload is null ? null : parser.ParseFrom(payload);
    }
}
