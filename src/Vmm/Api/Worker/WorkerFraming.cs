using System.Buffers.Binary;
using Google.Protobuf;

namespace FireSharp.Api.Worker;

/// <summary>
/// The daemon-worker wire format: a 4-byte little-endian length, then that many bytes of protobuf
/// (see src/Proto/firesharp/worker/v1/worker.proto).
/// </summary>
public static class WorkerFraming
{
    /// <summary>Largest frame accepted; a bigger length means a broken or hostile peer.</summary>
    public const int MaxFrameBytes = 1 << 20;

    public static async ValueTask WriteAsync(Stream stream, IMessage message, CancellationToken ct)
    {
        int length = message.CalculateSize();
        if (length > MaxFrameBytes) throw new InvalidDataException($"frame of {length} bytes exceeds {MaxFrameBytes}");
        var buffer = new byte[4 + length];
        BinaryPrimitives.WriteInt32LittleEndian(buffer, length);
        message.WriteTo(buffer.AsSpan(4));
        await stream.WriteAsync(buffer, ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Reads one message; null at a clean end of stream (EOF before a frame starts).</summary>
    public static async ValueTask<T?> ReadAsync<T>(Stream stream, MessageParser<T> parser, CancellationToken ct)
        where T : class, IMessage<T>
    {
        var header = new byte[4];
        int got = 0;
        while (got < 4)
        {
            int n = await stream.ReadAsync(header.AsMemory(got), ct).ConfigureAwait(false);
            if (n == 0)
            {
                if (got == 0) return null;
                throw new EndOfStreamException("connection closed inside a frame header");
            }
            got += n;
        }
        int length = BinaryPrimitives.ReadInt32LittleEndian(header);
        if (length is < 0 or > MaxFrameBytes) throw new InvalidDataException($"frame length {length} is outside 0..{MaxFrameBytes}");
        var body = new byte[length];
        await stream.ReadExactlyAsync(body, ct).ConfigureAwait(false);
        return parser.ParseFrom(body);
    }
}
