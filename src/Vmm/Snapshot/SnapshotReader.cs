namespace FireSharp.Snapshot;

/// <summary>A snapshot read from disk and fully validated; no VM exists yet.</summary>
public sealed record LoadedSnapshot(string Directory, string MemoryPath, SnapshotState State)
{
    /// <summary>The CRC-64 in the state file's header: the snapshot's identity (a diff records its base's).</summary>
    public ulong StateCrc { get; init; }
}

/// <summary>Reads and validates a snapshot directory without creating anything.</summary>
public static class SnapshotReader
{
    /// <summary>
    /// The largest state file a restore reads (16 MiB). Real ones are tens of KiB (vCPU, irqchip and device
    /// state; guest RAM is in the memory file), so anything larger is refused before it is read in.
    /// </summary>
    public const long MaxStateFileBytes = 16L << 20;

    /// <summary>
    /// Reads <c>vmstate</c> (header, length, CRC, content) and checks that <c>memory</c> has exactly
    /// the guest memory size. Throws <see cref="SnapshotException"/> on any problem.
    /// </summary>
    public static LoadedSnapshot Load(string directory)
    {
        string dir = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(dir))
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot directory {dir} does not exist");
        string statePath = Path.Combine(dir, SnapshotWriter.StateFileName);
        string memoryPath = Path.Combine(dir, SnapshotWriter.MemoryFileName);
        byte[] bytes = ReadStateFile(dir, statePath);
        var state = SnapshotFormat.Decode(bytes, statePath);
        long length;
        try
        {
            length = new FileInfo(memoryPath) is { Exists: true } info ? info.Length : -1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot stat {memoryPath}: {e.Message}", e);
        }
        if (length < 0)
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot {dir} has no memory file ({SnapshotWriter.MemoryFileName})");
        if ((ulong)length != state.Config.MemoryBytes)
            throw new SnapshotException(SnapshotErrorReason.MemoryFileSizeMismatch,
                $"{memoryPath} is {length} bytes but the snapshot's guest has {state.Config.MemoryBytes} bytes of memory");
        return new LoadedSnapshot(dir, memoryPath, state) { StateCrc = DiffInfo.StateCrc(bytes) };
    }

    /// <summary>
    /// Reads a state file whole, after checking its size on the open handle (no TOCTOU between the check and the
    /// read): a file over <see cref="MaxStateFileBytes"/>, or not a regular file, is Corrupt and is never read in.
    /// </summary>
    internal static byte[] ReadStateFile(string dir, string statePath)
    {
        try
        {
            using var file = File.OpenHandle(statePath, FileMode.Open, FileAccess.Read, FileShare.Read);
            long length = RandomAccess.GetLength(file);
            if (length > MaxStateFileBytes)
                throw new SnapshotException(SnapshotErrorReason.Corrupt,
                    $"{statePath} is {length} bytes, over the {MaxStateFileBytes >> 20} MiB cap for a state file: not read");
            var bytes = new byte[length];
            int done = 0;
            while (done < bytes.Length)
            {
                int n = RandomAccess.Read(file, bytes.AsSpan(done), done);
                if (n == 0) break;
                done += n;
            }
            return done == bytes.Length ? bytes : bytes[..done];
        }
        catch (FileNotFoundException)
        {
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot {dir} has no state file ({SnapshotWriter.StateFileName})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot read {statePath}: {e.Message}", e);
        }
    }

    /// <summary>
    /// For a diff snapshot: checks that every base of its chain is in place and unchanged (what a restore
    /// checks first). Nothing for a full snapshot. Throws <see cref="SnapshotException"/> (NotFound, BaseMismatch, ...).
    /// </summary>
    public static void CheckBases(LoadedSnapshot snapshot)
    {
        if (DiffInfo.TryLoad(snapshot.Directory) is { } diff) DiffRestore.ResolveChain(snapshot, diff);
    }
}
