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
    /// <remarks>
    /// Nothing is authenticated here: every file is opened through <see cref="SnapshotFiles.Open"/>, which takes the
    /// handle that <see cref="SnapshotFiles.OpenVerifiedChain"/> verified when there is one (a jailed worker's, from its
    /// jailer; an in-process restore given keys). Without one, the path is read as it is: for callers that verified
    /// the snapshot first, made it themselves, or were told <c>--insecure-unauthenticated</c>.
    /// </remarks>
    public static LoadedSnapshot Load(string directory)
    {
        string dir = Path.GetFullPath(directory);
        string statePath = Path.Combine(dir, SnapshotWriter.StateFileName);
        string memoryPath = Path.Combine(dir, SnapshotWriter.MemoryFileName);
        if (!SnapshotFiles.IsPreopened(dir) && !System.IO.Directory.Exists(dir))
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot directory {dir} does not exist");
        byte[] bytes = ReadStateFile(dir, statePath);
        var state = SnapshotFormat.Decode(bytes, statePath);
        long length;
        try
        {
            length = SnapshotFiles.Length(memoryPath) ?? -1;
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
            using var file = SnapshotFiles.Open(statePath);
            return ReadCapped(file, statePath, MaxStateFileBytes, SnapshotErrorReason.Corrupt);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot {dir} has no state file ({SnapshotWriter.StateFileName})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot read {statePath}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads a whole file through its handle, whose size is checked first: over <paramref name="cap"/> it is refused
    /// (<paramref name="tooBig"/>) unread. Positional reads, so a handle is read the same whoever read it before.
    /// </summary>
    internal static byte[] ReadCapped(Microsoft.Win32.SafeHandles.SafeFileHandle file, string path, long cap, SnapshotErrorReason tooBig)
    {
        long length;
        try
        {
            length = RandomAccess.GetLength(file);
            if (length > cap)
                throw new SnapshotException(tooBig, $"{path} is {length} bytes, over the {(cap >= 1 << 20 ? $"{cap >> 20} MiB" : $"{cap}-byte")} cap for it: not read");
            var bytes = new byte[length];
            int done = 0, n;
            while (done < bytes.Length && (n = RandomAccess.Read(file, bytes.AsSpan(done), done)) > 0) done += n;
            return done == bytes.Length ? bytes : bytes[..done];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot read {path}: {e.Message}", e);
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
