using System.Security.Cryptography;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;

namespace FireSharp.Tests.Agent;

/// <summary>
/// Files of any size through the agent's chunked ReadFile/WriteFile (<see cref="AgentFileTransfer"/>): the cutting
/// into chunks on its own, then round trips through a real agent on the host with small and with 1 MiB chunks.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class AgentFileTransferTests(SharedAgent shared) : IClassFixture<SharedAgent>
{
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token;

    private static async IAsyncEnumerable<ReadOnlyMemory<byte>> Pieces(byte[] data, params int[] sizes)
    {
        int at = 0, i = 0;
        while (at < data.Length)
        {
            int n = Math.Min(sizes[i++ % sizes.Length], data.Length - at);
            yield return data.AsMemory(at, n);
            at += n;
            await Task.Yield();
        }
    }

    private static async Task<List<(long Offset, byte[] Data)>> Chunks(IAsyncEnumerable<ReadOnlyMemory<byte>> pieces, int chunkBytes)
    {
        var chunks = new List<(long, byte[])>();
        await foreach (var (offset, data) in AgentFileTransfer.ChunkAsync(pieces, chunkBytes))
            chunks.Add((offset, data.ToArray()));
        return chunks;
    }

    [Theory]
    [InlineData(10, 4, new[] { 3 })]         // pieces smaller than a chunk
    [InlineData(10, 4, new[] { 9, 1 })]      // pieces larger than a chunk
    [InlineData(12, 4, new[] { 4 })]         // an exact multiple: no empty chunk at the end
    [InlineData(12, 4, new[] { 0, 5, 0 })]   // empty pieces are nothing
    [InlineData(1, 1024, new[] { 1 })]
    public async Task Pieces_become_full_chunks_at_increasing_offsets(int length, int chunkBytes, int[] pieceSizes)
    {
        var data = RandomNumberGenerator.GetBytes(length);
        var sizes = pieceSizes.Where(s => s > 0).DefaultIfEmpty(1).ToArray();
        var chunks = await Chunks(pieceSizes.Contains(0) ? WithEmpty(Pieces(data, sizes)) : Pieces(data, sizes), chunkBytes);
        Assert.Equal((length + chunkBytes - 1) / chunkBytes, chunks.Count);
        long expected = 0;
        foreach (var (offset, chunk) in chunks)
        {
            Assert.Equal(expected, offset);
            Assert.True(chunk.Length == chunkBytes || offset + chunk.Length == length, $"a short chunk at {offset} that is not the last");
            expected += chunk.Length;
        }
        Assert.Equal(data, chunks.SelectMany(c => c.Data).ToArray());
    }

    private static async IAsyncEnumerable<ReadOnlyMemory<byte>> WithEmpty(IAsyncEnumerable<ReadOnlyMemory<byte>> pieces)
    {
        await foreach (var p in pieces)
        {
            yield return ReadOnlyMemory<byte>.Empty;
            yield return p;
        }
        yield return ReadOnlyMemory<byte>.Empty;
    }

    [Fact]
    public async Task An_empty_source_is_one_empty_chunk_so_the_file_is_still_made()
    {
        var chunks = await Chunks(Pieces([]), 16);
        var (offset, data) = Assert.Single(chunks);
        Assert.Equal(0, offset);
        Assert.Empty(data);
    }

    [Theory]
    [InlineData(0, 1000)]
    [InlineData(999, 1000)]
    [InlineData(3000, 1000)]    // ends exactly on a chunk boundary
    [InlineData(3001, 1000)]
    [InlineData((3 << 20) + 12345, AgentProtocol.MaxFileBytes)] // above the old 1 MiB cap
    public async Task Files_of_any_size_round_trip_with_their_mode(int length, int chunkBytes)
    {
        var data = RandomNumberGenerator.GetBytes(length);
        string path = Path.Combine(shared.Agent.Directory, "xfer", $"f{length}-{chunkBytes}.bin");
        await using var client = await shared.Agent.ConnectAsync(Deadline());
        long written = await AgentFileTransfer.WriteAsync(client, path, 0b111_111_000, createParents: true, Pieces(data, 70_000, 1), chunkBytes, Deadline());
        Assert.Equal(length, written);
        Assert.Equal(data, await File.ReadAllBytesAsync(path));
        Assert.Equal((UnixFileMode)0b111_111_000, File.GetUnixFileMode(path)); // exactly, past the umask

        var back = new MemoryStream();
        int reads = 0;
        await foreach (var chunk in AgentFileTransfer.ReadAsync(client, path, chunkBytes, Deadline()))
        {
            Assert.Equal(back.Length, chunk.Offset);
            Assert.True(chunk.Data.Length <= chunkBytes);
            Assert.Equal(0b111_111_000u, chunk.Mode);
            Assert.Equal(length, chunk.Size);
            back.Write(chunk.Data.Span);
            reads++;
        }
        Assert.Equal(data, back.ToArray());
        Assert.Equal(Math.Max(1, (length + chunkBytes - 1) / chunkBytes), reads); // the last chunk knows it is the last

        // Copying over a longer file truncates it first.
        await AgentFileTransfer.WriteAsync(client, path, 0, false, Pieces("short"u8.ToArray(), 5), chunkBytes, Deadline());
        Assert.Equal("short"u8.ToArray(), await File.ReadAllBytesAsync(path));
        Assert.Equal((UnixFileMode)0b110_100_100, File.GetUnixFileMode(path)); // 0 = 0644
    }

    [Fact]
    public async Task Chunked_requests_are_checked()
    {
        await using var client = await shared.Agent.ConnectAsync(Deadline());
        string missing = Path.Combine(shared.Agent.Directory, "missing.bin");
        // A chunk above the limit, a later chunk of a file that does not exist, a read of a missing file.
        Assert.Equal(ErrorCode.InvalidArgument, (await Assert.ThrowsAsync<AgentException>(() =>
            client.ReadFileChunkAsync(new ReadFileRequest { Path = "/proc/meminfo", Length = AgentProtocol.MaxFileBytes + 1 }, Deadline()))).Code);
        Assert.Equal(ErrorCode.NotFound, (await Assert.ThrowsAsync<AgentException>(() =>
            client.WriteFileChunkAsync(new WriteFileRequest { Path = missing, Offset = 10, Data = Google.Protobuf.ByteString.CopyFromUtf8("x") }, Deadline()))).Code);
        var e = await Assert.ThrowsAsync<AgentException>(async () =>
        {
            await foreach (var _ in AgentFileTransfer.ReadAsync(client, missing, ct: Deadline())) { }
        });
        Assert.Equal(ErrorCode.NotFound, e.Code);
        // A procfs file (size 0, content anyway) reads to its end in small chunks.
        var text = new MemoryStream();
        await foreach (var chunk in AgentFileTransfer.ReadAsync(client, "/proc/self/status", 64, Deadline())) text.Write(chunk.Data.Span);
        Assert.Contains("VmRSS", System.Text.Encoding.UTF8.GetString(text.ToArray()));
    }
}
