namespace FireSharp.Snapshot;

/// <summary>A snapshot read from disk and fully validated; no VM exists yet.</summary>
public sealed record LoadedSnapshot(string Directory, string MemoryPath, SnapshotState State);

/// <summary>Reads and validates a snapshot directory without creating anything.</summary>
public static class SnapshotReader
{
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
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(statePath);
        }
        catch (FileNotFoundException)
        {
            throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot {dir} has no state file ({SnapshotWriter.StateFileName})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot read {statePath}: {e.Message}", e);
        }
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
        return new LoadedSnapshot(dir, memoryPath, state);
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
