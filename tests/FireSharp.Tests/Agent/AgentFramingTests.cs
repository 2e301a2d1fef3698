using System.Buffers.Binary;
using CsCheck;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using Google.Protobuf;

using FireSharp.Framing;

namespace FireSharp.Tests.Agent;

/// <summary>
/// The agent's frame format (4-byte little-endian length + protobuf), shared by the agent and
/// the host library: valid frames survive any chunking, malformed input never throws.
/// </summary>
public sealed class AgentFramingTests
{
    /// <summary>A stream that returns at most a few bytes per read, so frames arrive in pieces.</summary>
    private sealed class ChunkedStream(byte[] data, int[] chunkSizes) : Stream
    {
        private int _position, _next;
        public override int Read(byte[] buffer, int offset, int count)
        {
            int size = chunkSizes.Length == 0 ? count : Math.Max(1, chunkSizes[_next++ % chunkSizes.Length]);
            int n = Math.Min(Math.Min(size, count), data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => data.Length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private static readonly Gen<Request> GenRequest =
        Gen.Select(Gen.ULong, Gen.Int[0, 3], Gen.String[Gen.Char.AlphaNumeric, 0, 20].Array[0, 5], Gen.Byte.Array[0, 3000],
           (id, kind, strings, bytes) => kind switch
           {
               0 => new Request { Id = id, Ping = new PingRequest { Payload = ByteString.CopyFrom(bytes) } },
               1 => new Request { Id = id, Exec = new ExecRequest { Argv = { strings }, Stdin = ByteString.CopyFrom(bytes), TimeoutMs = (uint)bytes.Length } },
               2 => new Request { Id = id, WriteFile = new WriteFileRequest { Path = "/" + string.Join('/', strings), Data = ByteString.CopyFrom(bytes) } },
               _ => new Request { Id = id, Hello = new Hello { ProtocolVersion = (uint)strings.Length, Client = string.Concat(strings) } },
           });

    private static async Task<List<FrameReadResult>> ReadAll(byte[] data, int[] chunks, int maxFrame, List<byte[]> payloads)
    {
        using var reader = new FrameReader(new ChunkedStream(data, chunks), maxFrame);
        var results = new List<FrameReadResult>();
        while (true)
        {
            var r = await reader.ReadAsync();
            results.Add(r);
            if (r.Status == FrameStatus.Frame) payloads.Add(r.Payload.ToArray());
            else return results;
        }
    }

    [Fact]
    public void Valid_frames_round_trip_through_any_chunking()
    {
        Gen.Select(GenRequest.Array[0, 6], Gen.Int[1, 50].Array[0, 8]).Sample((requests, chunks) =>
        {
            var data = requests.SelectMany(r => Frames.Encode(r, AgentProtocol.MaxFrameBytes)).ToArray();
            var payloads = new List<byte[]>();
            var results = ReadAll(data, chunks, AgentProtocol.MaxFrameBytes, payloads).GetAwaiter().GetResult();
            Assert.Equal(FrameStatus.EndOfStream, results[^1].Status);
            Assert.Equal(requests.Length, payloads.Count);
            for (int i = 0; i < requests.Length; i++)
                Assert.Equal(requests[i], Request.Parser.ParseFrom(payloads[i]));
        }, iter: 300);
    }

    [Fact]
    public void Arbitrary_bytes_never_throw_and_follow_the_length_prefixes()
    {
        // Model: walk the length prefixes; each whole frame is returned, a short tail is
        // Truncated, a length above the limit is TooLarge (and stays so).
        const int max = 512;
        Gen.Select(Gen.Byte.Array[0, 2000], Gen.Int[1, 64].Array[0, 6]).Sample((data, chunks) =>
        {
            var payloads = new List<byte[]>();
            var results = ReadAll(data, chunks, max, payloads).GetAwaiter().GetResult();
            int pos = 0, frames = 0;
            FrameStatus expectedEnd;
            while (true)
            {
                if (pos == data.Length) { expectedEnd = FrameStatus.EndOfStream; break; }
                if (data.Length - pos < 4) { expectedEnd = FrameStatus.Truncated; break; }
                uint length = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos));
                if (length > max) { expectedEnd = FrameStatus.TooLarge; break; }
                if (data.Length - pos - 4 < length) { expectedEnd = FrameStatus.Truncated; break; }
                Assert.Equal(data.AsSpan(pos + 4, (int)length).ToArray(), payloads[frames]);
                pos += 4 + (int)length;
                frames++;
            }
            Assert.Equal(frames, payloads.Count);
            Assert.Equal(expectedEnd, results[^1].Status);
            // Every payload, whatever it holds, parses or is refused without an exception.
            foreach (var p in payloads)
            {
                bool ok = Frames.TryParse(p, Request.Parser, out var request, out var error);
                Assert.True(ok ? request is not null : error is not null);
            }
        }, iter: 2000);
    }

    [Fact]
    public void Garbage_protobuf_is_refused_without_throwing()
    {
        Gen.Byte.Array[0, 300].Sample(bytes =>
        {
            bool ok = Frames.TryParse(bytes, Request.Parser, out var request, out var error);
            Assert.True(ok ^ (error is not null));
            if (ok) Assert.NotNull(request);
            Frames.TryParse(bytes, Response.Parser, out _, out _);
        }, iter: 5000);
    }

    [Fact]
    public async Task Truncated_header_and_payload_are_reported()
    {
        var frame = Frames.Encode(new Request { Id = 1, Ping = new PingRequest { Payload = ByteString.CopyFromUtf8("abc") } }, AgentProtocol.MaxFrameBytes);
        for (int cut = 1; cut < frame.Length; cut++)
        {
            var payloads = new List<byte[]>();
            var results = await ReadAll(frame[..cut], [], AgentProtocol.MaxFrameBytes, payloads);
            Assert.Empty(payloads);
            Assert.Equal(FrameStatus.Truncated, Assert.Single(results).Status);
        }
    }

    [Fact]
    public async Task Oversize_length_is_reported_with_its_value_and_stays_poisoned()
    {
        var data = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(data, AgentProtocol.MaxFrameBytes + 1u);
        using var reader = new FrameReader(new MemoryStream(data), AgentProtocol.MaxFrameBytes);
        var first = await reader.ReadAsync();
        Assert.Equal(FrameStatus.TooLarge, first.Status);
        Assert.Equal(AgentProtocol.MaxFrameBytes + 1L, first.DeclaredLength);
        Assert.Equal(FrameStatus.TooLarge, (await reader.ReadAsync()).Status);
        Assert.Equal(Frames.HeaderResult.TooLarge, Frames.TryReadHeader(data, AgentProtocol.MaxFrameBytes, out var length));
        Assert.Equal(AgentProtocol.MaxFrameBytes + 1u, length);
        Assert.Equal(Frames.HeaderResult.NeedMore, Frames.TryReadHeader(data.AsSpan(0, 3), AgentProtocol.MaxFrameBytes, out _));
    }

    [Fact]
    public async Task A_frame_of_exactly_the_limit_is_accepted()
    {
        var payload = new byte[1000];
        var data = new byte[4 + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(data, (uint)payload.Length);
        var payloads = new List<byte[]>();
        var results = await ReadAll(data, [7, 100], 1000, payloads);
        Assert.Equal(FrameStatus.EndOfStream, results[^1].Status);
        Assert.Equal(payload, Assert.Single(payloads));
    }

    [Fact]
    public void An_unknown_request_type_parses_with_no_body()
    {
        // id = 5, then field 99 (length-delimited, 3 bytes): a request type this build lacks.
        var bytes = new byte[] { 0x08, 0x05, 0x9a, 0x06, 0x03, 0x61, 0x62, 0x63 };
        Assert.True(Frames.TryParse(bytes, Request.Parser, out var request, out _));
        Assert.Equal(5ul, request!.Id);
        Assert.Equal(Request.BodyOneofCase.None, request.BodyCase);
    }

    [Fact]
    public async Task Writer_refuses_a_message_above_the_limit_and_writes_whole_frames()
    {
        var big = new Request { Ping = new PingRequest { Payload = ByteString.CopyFrom(new byte[2000]) } };
        using var sink = new MemoryStream();
        using var writer = new FrameWriter(sink, maxFrameBytes: 1000);
        await Assert.ThrowsAsync<ArgumentException>(() => writer.WriteAsync(big).AsTask());
        Assert.Throws<ArgumentException>(() => Frames.Encode(big, 1000));
        Assert.Equal(0, sink.Length);
        var small = new Request { Id = 3, Ping = new PingRequest() };
        await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => writer.WriteAsync(small).AsTask()));
        var payloads = new List<byte[]>();
        var results = await ReadAll(sink.ToArray(), [], 1000, payloads);
        Assert.Equal(20, payloads.Count);
        Assert.All(payloads, p => Assert.Equal(small, Request.Parser.ParseFrom(p)));
    }
}
