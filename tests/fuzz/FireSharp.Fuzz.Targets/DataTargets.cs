using System.Buffers.Binary;
using System.IO.Hashing;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon;
using FireSharp.Framing;
using FireSharp.Proto.Agent;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Worker.Protocol;
using Google.Protobuf;

namespace FireSharp.Fuzz;

/// <summary>The byte formats that cross a trust boundary: the snapshot state file, the worker and agent framings, the API's CreateVm request.</summary>
public static class DataTargets
{
    /// <summary>
    /// The snapshot state reader. First byte even: the rest is the content, wrapped in a valid header with its
    /// CRC-64 recomputed (as an attacker who can write the file would), so that the decoder proper is reached.
    /// Odd: the rest is the whole file. A bad file must be a <see cref="SnapshotException"/>.
    /// </summary>
    public static void SnapshotState(byte[] input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var rest = input.AsSpan(Math.Min(1, input.Length));
        byte[] file = input.Length > 0 && (input[0] & 1) != 0 ? rest.ToArray() : WrapSnapshot(rest);
        SnapshotFormat.Decode(file, "fuzz/vmstate");
    }

    /// <summary>A state file around <paramref name="content"/>: magic, version, header length, content length, CRC-64.</summary>
    public static byte[] WrapSnapshot(ReadOnlySpan<byte> content)
    {
        var file = new byte[SnapshotFormat.HeaderLength + content.Length];
        SnapshotFormat.Magic.CopyTo(file);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8), SnapshotFormat.Version);
        BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(12), SnapshotFormat.HeaderLength);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(16), (ulong)content.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(24), Crc64.HashToUInt64(content));
        content.CopyTo(file.AsSpan(SnapshotFormat.HeaderLength));
        return file;
    }

    /// <summary>
    /// The daemon-worker framing, read as the worker reads requests (first byte even) or as the daemon reads
    /// the worker's messages (odd), frame after frame to the end of the input. A bad stream must end in
    /// <see cref="InvalidDataException"/> (frame too large), <see cref="EndOfStreamException"/> (cut short) or
    /// <see cref="InvalidProtocolBufferException"/> (bad payload): the errors the worker and the daemon handle.
    /// </summary>
    public static void WorkerFraming(byte[] input)
    {
        ArgumentNullException.ThrowIfNull(input);
        bool daemonSide = input.Length > 0 && (input[0] & 1) != 0;
        using var stream = new MemoryStream(input, Math.Min(1, input.Length), Math.Max(0, input.Length - 1), writable: false);
        for (int frames = 0; frames < 64; frames++)
        {
            IMessage? message = daemonSide
                ? Worker.Protocol.WorkerFraming.ReadAsync(stream, WorkerMessage.Parser, CancellationToken.None).AsTask().GetAwaiter().GetResult()
                : Worker.Protocol.WorkerFraming.ReadAsync(stream, WorkerRequest.Parser, CancellationToken.None).AsTask().GetAwaiter().GetResult();
            if (message is null) return;
            // What the reader hands on must encode again within the frame limit.
            Frames.Encode(message, Worker.Protocol.WorkerFraming.MaxFrameBytes);
        }
    }

    /// <summary>
    /// The agent framing as both ends read it: a <see cref="FrameReader"/> over a stream that delivers the input
    /// in pieces (sizes from the first byte), each payload parsed as a request and as a response. Nothing here
    /// may throw: a bad stream is a status (truncated, too large), a bad payload a false from TryParse.
    /// </summary>
    public static void AgentFraming(byte[] input)
    {
        ArgumentNullException.ThrowIfNull(input);
        int piece = input.Length > 0 ? input[0] % 17 + 1 : 1;
        using var stream = new PieceStream(input.AsMemory(Math.Min(1, input.Length)), piece);
        using var reader = new FrameReader(stream, AgentProtocol.MaxFrameBytes);
        for (int frames = 0; frames < 64; frames++)
        {
            var result = reader.ReadAsync().AsTask().GetAwaiter().GetResult();
            if (result.Status != FrameStatus.Frame) return;
            Frames.TryParse(result.Payload.Span, Request.Parser, out _, out _);
            Frames.TryParse(result.Payload.Span, Response.Parser, out _, out _);
        }
    }

    /// <summary>
    /// The daemon's request validation: a CreateVmRequest from the wire, mapped to the domain by
    /// <see cref="VmApiMapping"/> and checked by <see cref="SpecValidator"/>. A bad request must be a
    /// <see cref="VmApiException"/> (or a protobuf parse error, which gRPC turns into INTERNAL before any handler).
    /// </summary>
    public static void CreateVm(byte[] input)
    {
        var request = CreateVmRequest.Parser.ParseFrom(input);
        var command = VmApiMapping.ToCommand(request);
        SpecValidator.ValidateCreate(command, s_host);
    }

    private static readonly HostLimits s_host = new(8UL << 30, 2);

    /// <summary>A read-only stream that returns at most <c>piece</c> bytes per read.</summary>
    private sealed class PieceStream(ReadOnlyMemory<byte> data, int piece) : Stream
    {
        private int _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => data.Length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(piece, buffer.Length), data.Length - _position);
            data.Span.Slice(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
