using System.Runtime.CompilerServices;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Google.Protobuf;

namespace FireSharp.Daemon.Agent;

/// <summary>A chunk of a file read from the guest: where it goes, its bytes, and the file's mode and size (st_size when opened).</summary>
public readonly record struct GuestFileChunk(long Offset, ReadOnlyMemory<byte> Data, uint Mode, long Size);

/// <summary>
/// Files of any size through the agent's ReadFile/WriteFile, which carry at most
/// <see cref="AgentProtocol.MaxFileBytes"/> per request: a write is cut into chunks at increasing offsets
/// (the first creates or truncates the file, the later ones write into it), a read asks for chunks until the
/// agent says the file ends. One request at a time on the client's connection, so memory stays at one chunk.
/// </summary>
public static class AgentFileTransfer
{
    /// <summary>The chunk size: the agent's per-request limit (1 MiB).</summary>
    public const int DefaultChunkBytes = AgentProtocol.MaxFileBytes;

    /// <summary>
    /// Cuts <paramref name="pieces"/> (of any sizes, empty ones too) into chunks of exactly
    /// <paramref name="chunkBytes"/>, the last one shorter, each with its offset in the file. An empty source is
    /// one empty chunk at offset 0 (so the file is still created). A chunk's memory is reused for the next one:
    /// use it before moving on.
    /// </summary>
    public static async IAsyncEnumerable<(long Offset, ReadOnlyMemory<byte> Data)> ChunkAsync(
        IAsyncEnumerable<ReadOnlyMemory<byte>> pieces, int chunkBytes, [EnumeratorCancellation] CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkBytes, 1);
        var buffer = new byte[chunkBytes];
        int count = 0;
        long offset = 0;
        bool any = false;
        await foreach (var piece in pieces.WithCancellation(ct).ConfigureAwait(false))
        {
            var rest = piece;
            while (!rest.IsEmpty)
            {
                int n = Math.Min(chunkBytes - count, rest.Length);
                rest.Span[..n].CopyTo(buffer.AsSpan(count));
                rest = rest[n..];
                count += n;
                if (count < chunkBytes) continue;
                yield return (offset, buffer);
                any = true;
                offset += count;
                count = 0;
            }
        }
        if (count > 0 || !any) yield return (offset, buffer.AsMemory(0, count));
    }

    /// <summary>
    /// Writes <paramref name="pieces"/> to <paramref name="path"/> in the guest: created (with missing parents when
    /// asked) or truncated, then its mode set to exactly <paramref name="mode"/> (0 = 0644). Returns the bytes written.
    /// </summary>
    public static async Task<long> WriteAsync(AgentClient client, string path, uint mode, bool createParents,
        IAsyncEnumerable<ReadOnlyMemory<byte>> pieces, int chunkBytes = DefaultChunkBytes, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        long total = 0;
        await foreach (var (offset, data) in ChunkAsync(pieces, chunkBytes, ct).ConfigureAwait(false))
        {
            // The request is written out before the next chunk fills the buffer: no copy needed.
            await client.WriteFileChunkAsync(new WriteFileRequest
            {
                Path = path,
                Offset = (ulong)offset,
                Data = UnsafeByteOperations.UnsafeWrap(data),
                Mode = mode,
                SetMode = offset == 0,
                CreateParents = createParents && offset == 0,
            }, ct).ConfigureAwait(false);
            total = offset + data.Length;
        }
        return total;
    }

    /// <summary>The most read of a guest file that reports size 0 (procfs and the like).</summary>
    public const long MaxUnsizedBytes = 64L << 20;

    /// <summary>Reads <paramref name="path"/> from the guest in chunks of at most <paramref name="chunkBytes"/>, until its end.</summary>
    public static async IAsyncEnumerable<GuestFileChunk> ReadAsync(AgentClient client, string path, int chunkBytes = DefaultChunkBytes,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkBytes, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(chunkBytes, AgentProtocol.MaxFileBytes);
        long offset = 0;
        long limit = -1;
        while (true)
        {
            var reply = await client.ReadFileChunkAsync(new ReadFileRequest { Path = path, Offset = (ulong)offset, Length = (uint)chunkBytes }, ct).ConfigureAwait(false);
            // The guest is not trusted to ever say eof: the copy ends at the size it reported first (a file that grows
            // while it is read may add one chunk), or for a file that reports no size (procfs) at MaxUnsizedBytes, so a
            // guest cannot stream without end into the caller's disk.
            if (limit < 0) limit = reply.Size > 0 ? (long)Math.Min(reply.Size, long.MaxValue / 2) + chunkBytes : MaxUnsizedBytes;
            if (offset + reply.Data.Length > limit)
                throw new IOException($"{path}: the guest sent more than the {reply.Size} bytes it reported");
            // Only the permission bits (and setuid/setgid/sticky, which the client drops) of the guest's mode are passed on.
            yield return new GuestFileChunk(offset, reply.Data.Memory, reply.Mode & 0xFFF, (long)reply.Size);
            offset += reply.Data.Length;
            // (An empty chunk that is not the end would loop forever: stop.)
            if (reply.Eof || reply.Data.Length == 0) yield break;
        }
    }
}
