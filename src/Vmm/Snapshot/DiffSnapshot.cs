using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using FireSharp.Memory;
using FireSharp.Vm;

namespace FireSharp.Snapshot;

/// <summary>
/// The <c>diff</c> file of a diff snapshot: which pages its memory file holds and which snapshot it
/// applies to.
/// <code>
///   0  magic "FSDIFF01"                      8 bytes
///   8  guest memory bytes (u64)
///  16  base identity: the CRC-64 in the base's state-file header (u64)
///  24  base directory length (u32), then the absolute path, UTF-8
///   …  page bitmap: (memory bytes / 4096 + 63) / 64 u64 words; bit i = memory-file page i
///   …  CRC-64 of everything before it (u64)
/// </code>
/// The diff's <c>memory</c> file has the full guest size; the pages of the bitmap are written at their
/// offsets (zero pages too: the bitmap, not SEEK_DATA, says what is there), the rest is holes.
/// </summary>
public sealed record DiffInfo(ulong MemoryBytes, ulong BaseCrc, string BaseDirectory, ulong[] Pages)
{
    public const string FileName = "diff";
    private static ReadOnlySpan<byte> Magic => "FSDIFF01"u8;

    public int PageCount
    {
        get
        {
            int n = 0;
            foreach (var w in Pages) n += System.Numerics.BitOperations.PopCount(w);
            return n;
        }
    }

    public static int Words(ulong memoryBytes) => (int)((memoryBytes / MemoryLayout.PageSize + 63) / 64);

    public byte[] Encode()
    {
        var path = Encoding.UTF8.GetBytes(BaseDirectory);
        var bytes = new byte[28 + path.Length + Pages.Length * 8 + 8];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8), MemoryBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(16), BaseCrc);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(24), path.Length);
        path.CopyTo(bytes.AsSpan(28));
        int at = 28 + path.Length;
        foreach (var w in Pages)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), w);
            at += 8;
        }
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), Crc64.HashToUInt64(bytes.AsSpan(0, at)));
        return bytes;
    }

    public static DiffInfo Decode(ReadOnlySpan<byte> bytes, string path)
    {
        if (bytes.Length < 36 || !bytes.StartsWith(Magic))
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: not a FireSharp diff file");
        ulong crc = BinaryPrimitives.ReadUInt64LittleEndian(bytes[^8..]);
        if (crc != Crc64.HashToUInt64(bytes[..^8]))
            throw new SnapshotException(SnapshotErrorReason.ChecksumMismatch, $"{path}: CRC-64 mismatch: the diff file is damaged");
        ulong memoryBytes = BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]);
        ulong baseCrc = BinaryPrimitives.ReadUInt64LittleEndian(bytes[16..]);
        int pathLength = BinaryPrimitives.ReadInt32LittleEndian(bytes[24..]);
        if (memoryBytes == 0 || memoryBytes % MemoryLayout.PageSize != 0 || pathLength <= 0 || pathLength > bytes.Length - 36
            || bytes.Length != 36 + pathLength + Words(memoryBytes) * 8)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{path}: corrupt diff file (sizes do not add up)");
        string baseDir = Encoding.UTF8.GetString(bytes.Slice(28, pathLength));
        var pages = new ulong[Words(memoryBytes)];
        for (int i = 0; i < pages.Length; i++) pages[i] = BinaryPrimitives.ReadUInt64LittleEndian(bytes[(28 + pathLength + i * 8)..]);
        return new DiffInfo(memoryBytes, baseCrc, baseDir, pages);
    }

    /// <summary>The diff file of snapshot directory <paramref name="dir"/>, or null for a full snapshot.</summary>
    public static DiffInfo? TryLoad(string dir)
    {
        string path = Path.Combine(dir, FileName);
        byte[] bytes;
        try
        {
            using var file = SnapshotFiles.OpenIfExists(path);
            if (file is null) return null;
            bytes = SnapshotReader.ReadCapped(file, path, SnapshotReader.MaxStateFileBytes, SnapshotErrorReason.Corrupt);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot read {path}: {e.Message}", e);
        }
        return Decode(bytes, path);
    }

    /// <summary>The identity of a snapshot: the CRC-64 of its state file's content, from the header.</summary>
    public static ulong StateCrc(byte[] stateFile) => BinaryPrimitives.ReadUInt64LittleEndian(stateFile.AsSpan(24));
}

/// <summary>
/// Restoring a diff snapshot: resolves the chain of bases down to a full snapshot, checking each base's
/// identity, then maps the full snapshot's memory file and copies each diff's pages over it, oldest first.
/// </summary>
internal static class DiffRestore
{
    public const int MaxChain = 64;

    /// <summary>
    /// For a diff snapshot: the full snapshot at the root of its chain and the diffs to apply (oldest first).
    /// Throws <see cref="SnapshotException"/> (NotFound, BaseMismatch, Corrupt) when a base is missing or changed.
    /// </summary>
    public static (LoadedSnapshot Root, List<(string Dir, DiffInfo Diff)> Diffs) ResolveChain(LoadedSnapshot snapshot, DiffInfo diff)
    {
        var chain = new List<(string, DiffInfo)> { (snapshot.Directory, diff) };
        var seen = new HashSet<string>(StringComparer.Ordinal) { snapshot.Directory };
        var current = diff;
        string from = snapshot.Directory;
        while (true)
        {
            if (current.MemoryBytes != snapshot.State.Config.MemoryBytes)
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{from}: diff covers {current.MemoryBytes} bytes of memory, the guest has {snapshot.State.Config.MemoryBytes}");
            string baseDir = Path.GetFullPath(current.BaseDirectory);
            if (!seen.Add(baseDir) || chain.Count > MaxChain)
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: diff chain loops or is longer than {MaxChain}");
            LoadedSnapshot loaded;
            try
            {
                loaded = SnapshotReader.Load(baseDir);
            }
            catch (SnapshotException e)
            {
                throw new SnapshotException(e.Reason == SnapshotErrorReason.NotFound ? SnapshotErrorReason.NotFound : SnapshotErrorReason.BaseMismatch,
                    $"diff snapshot {from}: its base {baseDir} cannot be used: {e.Message}", e);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new SnapshotException(SnapshotErrorReason.IoError, $"diff snapshot {from}: cannot read its base {baseDir}: {e.Message}", e);
            }
            ulong crc = loaded.StateCrc;
            if (crc != current.BaseCrc)
                throw new SnapshotException(SnapshotErrorReason.BaseMismatch,
                    $"diff snapshot {from} was taken on base 0x{current.BaseCrc:x16}, but {baseDir} is now snapshot 0x{crc:x16}: the base was replaced or changed");
            if (loaded.State.Config.MemoryBytes != snapshot.State.Config.MemoryBytes)
                throw new SnapshotException(SnapshotErrorReason.BaseMismatch, $"diff snapshot {from}: its base {baseDir} has a different memory size");
            if (DiffInfo.TryLoad(baseDir) is not { } next)
            {
                chain.Reverse();
                return (loaded, chain);
            }
            chain.Add((baseDir, next));
            current = next;
            from = baseDir;
        }
    }

    /// <summary>Copies the pages each diff holds from its memory file into <paramref name="memory"/> (oldest diff first).</summary>
    public static ulong Apply(GuestMemory memory, IEnumerable<(string Dir, DiffInfo Diff)> diffs)
    {
        ulong copied = 0;
        foreach (var (dir, diff) in diffs)
        {
            string path = Path.Combine(dir, SnapshotWriter.MemoryFileName);
            using var file = SnapshotFiles.Open(path);
            ulong regionOffset = 0;
            foreach (var region in memory.Regions)
            {
                ulong firstPage = regionOffset / MemoryLayout.PageSize, pages = region.Size / MemoryLayout.PageSize;
                foreach (var (start, count) in Runs(diff.Pages, firstPage, pages))
                {
                    ulong gpa = region.GuestAddress + (start - firstPage) * MemoryLayout.PageSize;
                    for (ulong done = 0; done < count; done += 256)
                    {
                        int n = (int)Math.Min(256, count - done);
                        var span = memory.GetSpan(gpa + done * MemoryLayout.PageSize, n * (int)MemoryLayout.PageSize);
                        long at = (long)((start + done) * MemoryLayout.PageSize);
                        int read = 0;
                        while (read < span.Length)
                        {
                            int r = RandomAccess.Read(file, span[read..], at + read);
                            if (r <= 0) throw new SnapshotException(SnapshotErrorReason.Truncated, $"{path}: ends before page {(at + read) / 4096}");
                            read += r;
                        }
                        copied += (ulong)span.Length;
                    }
                }
                regionOffset += region.Size;
            }
        }
        return copied;
    }

    /// <summary>Runs of set bits in [first, first+count), as (page, length).</summary>
    public static IEnumerable<(ulong Start, ulong Count)> Runs(ulong[] bitmap, ulong first, ulong count)
    {
        ulong runStart = 0, runLength = 0;
        for (ulong p = first; p < first + count; p++)
        {
            if ((bitmap[p / 64] & (1UL << (int)(p % 64))) == 0) continue;
            if (runLength > 0 && runStart + runLength == p) runLength++;
            else
            {
                if (runLength > 0) yield return (runStart, runLength);
                runStart = p;
                runLength = 1;
            }
        }
        if (runLength > 0) yield return (runStart, runLength);
    }
}
