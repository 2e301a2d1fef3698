using System.Buffers;
using System.Buffers.Binary;
using Google.Protobuf;

namespace FireSharp.Framing;

/// <summary>What <see cref="FrameReader.ReadAsync"/> found.</summary>
public enum FrameStatus
{
    /// <summary>A whole frame; its payload is in <see cref="FrameReadResult.Payload"/>.</summary>
    Frame,
    /// <summary>The stream ended cleanly between frames.</summary>
    EndOfStream,
    /// <summary>The stream ended inside a frame's header or payload.</summary>
    Truncated,
    /// <summary>The header announced more than the limit; the stream cannot be resynchronised.</summary>
    TooLarge,
}

/// <summary>One result of <see cref="FrameReader.ReadAsync"/>.</summary>
public readonly struct FrameReadResult
{
    public FrameReadResult(FrameStatus status, ReadOnlyMemory<byte> payload = default, long declaredLength = 0)
    {
        Status = status;
        Payload = payload;
        DeclaredLength = declaredLength;
    }

    public FrameStatus Status { get; }

    /// <summary>The frame's payload; valid only until the next read.</summary>
    public ReadOnlyMemory<byte> Payload { get; }

    /// <summary>The length the header announced (for <see cref="FrameStatus.TooLarge"/>).</summary>
    public long DeclaredLength { get; }
}

/// <summary>
/// Pure helpers for FireSharp's frames: a 4-byte little-endian payload length, then the payload (one
/// protobuf message). The daemon-worker protocol and the agent protocol both use them, each with its own
/// frame limit.
/// </summary>
public static class Frames
{
    /// <summary>Bytes of the length prefix.</summary>
    public const int HeaderBytes = 4;

    /// <summary>The outcome of looking at the start of a buffer for a frame header.</summary>
    public enum HeaderResult { NeedMore, Ok, TooLarge }

    /// <summary>Reads the header at the start of <paramref name="data"/>.</summary>
    public static HeaderResult TryReadHeader(ReadOnlySpan<byte> data, int maxFrameBytes, out uint length)
    {
        length = 0;
        if (data.Length < Frames.HeaderBytes) return HeaderResult.NeedMore;
        length = BinaryPrimitives.ReadUInt32LittleEndian(data);
        return length > (uint)maxFrameBytes ? HeaderResult.TooLarge : HeaderResult.Ok;
    }

    /// <summary>The whole frame (header and payload) for <paramref name="message"/>.</summary>
    public static byte[] Encode(IMessage message, int maxFrameBytes)
    {
        int size = CheckedSize(message, maxFrameBytes);
        var frame = new byte[Frames.HeaderBytes + size];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)size);
        message.WriteTo(frame.AsSpan(Frames.HeaderBytes));
        return frame;
    }

    /// <summary>
    /// Parses a payload. Malformed protobuf gives false and a reason; it never throws.
    /// </summary>
    public static bool TryParse<T>(ReadOnlySpan<byte> payload, MessageParser<T> parser, out T? message, out string? error)
        where T : IMessage<T>
    {
        try
        {
            message = parser.ParseFrom(payload);
            error = null;
            return true;
        }
        catch (InvalidProtocolBufferException e)
        {
            message = default;
            error = e.Message;
            return false;
        }
    }

    /// <summary>
    /// Reads exactly one frame's payload without buffering past it: null at a clean end of stream (before a
    /// header starts); a frame cut short is an <see cref="EndOfStreamException"/>, one over the limit an
    /// <see cref="InvalidDataException"/> (the stream cannot be resynchronised).
    /// </summary>
    public static async ValueTask<byte[]?> ReadOneAsync(Stream stream, int maxFrameBytes, CancellationToken cancellationToken)
    {
        var header = new byte[HeaderBytes];
        int got = 0;
        while (got < HeaderBytes)
        {
            int n = await stream.ReadAsync(header.AsMemory(got), cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                if (got == 0) return null;
                throw new EndOfStreamException("the stream ended inside a frame header");
            }
            got += n;
        }
        if (TryReadHeader(header, maxFrameBytes, out uint length) == HeaderResult.TooLarge)
            throw new InvalidDataException($"frame length {length} exceeds the {maxFrameBytes}-byte limit");
        var payload = new byte[length];
        await stream.ReadExactlyAsync(payload, cancellationToken).ConfigureAwait(false);
        return payload;
    }

    internal static int CheckedSize(IMessage message, int maxFrameBytes)
    {
        int size = message.CalculateSize();
        if (size > maxFrameBytes)
            throw new ArgumentException($"a {message.Descriptor.Name} of {size} bytes exceeds the {maxFrameBytes}-byte frame limit", nameof(message));
        return size;
    }
}

/// <summary>
/// Reads frames from a stream. The buffer grows with the bytes that actually arrive (not with the
/// length a header claims), so a peer that announces a large frame and stalls costs little memory.
/// Not thread-safe: one reader per stream.
/// </summary>
public sealed class FrameReader : IDisposable
{
    private const int InitialBuffer = 16 << 10;
    private readonly Stream _stream;
    private readonly int _maxFrameBytes;
    private byte[] _buffer;
    private int _start, _end, _consumeOnNextRead;
    private long _poisonedLength = -1;

    public FrameReader(Stream stream, int maxFrameBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxFrameBytes);
        _stream = stream;
        _maxFrameBytes = maxFrameBytes;
        _buffer = ArrayPool<byte>.Shared.Rent(InitialBuffer);
    }

    /// <summary>
    /// Reads the next frame. I/O errors of the stream propagate; malformed input does not throw
    /// (it is <see cref="FrameStatus.Truncated"/> or <see cref="FrameStatus.TooLarge"/>).
    /// </summary>
    public async ValueTask<FrameReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_buffer.Length == 0, this);
        if (_poisonedLength >= 0) return new FrameReadResult(FrameStatus.TooLarge, declaredLength: _poisonedLength);
        _start += _consumeOnNextRead;
        _consumeOnNextRead = 0;
        if (_start == _end)
        {
            _start = _end = 0;
            if (_buffer.Length > InitialBuffer) Replace(InitialBuffer);
        }

        while (_end - _start < Frames.HeaderBytes)
        {
            if (!await FillAsync(Frames.HeaderBytes, cancellationToken).ConfigureAwait(false))
                return new FrameReadResult(_end == _start ? FrameStatus.EndOfStream : FrameStatus.Truncated);
        }

        if (Frames.TryReadHeader(_buffer.AsSpan(_start, _end - _start), _maxFrameBytes, out uint length) == Frames.HeaderResult.TooLarge)
        {
            _poisonedLength = length;
            return new FrameReadResult(FrameStatus.TooLarge, declaredLength: length);
        }

        int total = Frames.HeaderBytes + (int)length;
        while (_end - _start < total)
        {
            if (!await FillAsync(total, cancellationToken).ConfigureAwait(false))
                return new FrameReadResult(FrameStatus.Truncated);
        }
        _consumeOnNextRead = total;
        return new FrameReadResult(FrameStatus.Frame, _buffer.AsMemory(_start + Frames.HeaderBytes, (int)length), length);
    }

    /// <summary>One read from the stream into free buffer space; false at end of stream.</summary>
    private async ValueTask<bool> FillAsync(int frameTotal, CancellationToken cancellationToken)
    {
        if (_end == _buffer.Length)
        {
            if (_start > 0)
            {
                // Slide the partial frame to the front.
                _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length)
                Replace(Math.Min(Math.Max(_buffer.Length * 2, InitialBuffer), Math.Max(frameTotal, _end + 1)));
        }
        int n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
        if (n <= 0) return false;
        _end += n;
        return true;
    }

    private void Replace(int size)
    {
        var next = ArrayPool<byte>.Shared.Rent(size);
        _buffer.AsSpan(_start, _end - _start).CopyTo(next);
        _end -= _start;
        _start = 0;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = next;
    }

    public void Dispose()
    {
        if (_buffer.Length == 0) return;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
    }
}

/// <summary>
/// Writes whole frames to a stream; safe to call from several tasks at once (frames never
/// interleave).
/// </summary>
public sealed class FrameWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly int _maxFrameBytes;
    private readonly SemaphoreSlim _gate = new(1, 1);

    public FrameWriter(Stream stream, int maxFrameBytes)
    {
        _stream = stream;
        _maxFrameBytes = maxFrameBytes;
    }

    /// <summary>Writes one frame. A message above the frame limit throws <see cref="ArgumentException"/>.</summary>
    public async ValueTask WriteAsync(IMessage message, CancellationToken cancellationToken = default)
    {
        int size = Frames.CheckedSize(message, _maxFrameBytes);
        int total = Frames.HeaderBytes + size;
        var buffer = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)size);
            message.WriteTo(buffer.AsSpan(Frames.HeaderBytes, size));
            await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await _stream.WriteAsync(buffer.AsMemory(0, total), cancellationToken).ConfigureAwait(false);
                await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _gate.Release();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public void Dispose() => _gate.Dispose();
}
