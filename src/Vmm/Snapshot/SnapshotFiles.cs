using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Snapshot;

/// <summary>One snapshot file opened by <see cref="SnapshotFiles.OpenVerifiedChain"/>: the path it stands for and its handle.</summary>
public sealed record OpenedSnapshotFile(string Path, SafeFileHandle Handle);

/// <summary>
/// How a snapshot's files are opened, so that what is verified is what is used (docs/security.md, "Snapshots").
/// <list type="bullet">
/// <item><see cref="OpenVerifiedChain"/> is the one verification: it opens a snapshot's state, diff and memory files
///   (and its diff chain's, base by base), checks each directory's <c>vmstate.mac</c> over the bytes read from those
///   handles and the memory file's recorded identity against fstat of its handle, and returns the handles. A jailed
///   VM's jailer (root, before any guest code) calls it and hands the handles to the worker as fds, which stage 2
///   registers in <see cref="PreopenedFiles"/>; an unjailed worker and <c>firesharp run --restore --snapshot-key</c>
///   call it in-process, for the one restore running on this thread (<see cref="VerifiedScope"/>).</item>
/// <item>The restore (<see cref="SnapshotReader"/>, the memory mapping, the diff chain) opens every snapshot file
///   through <see cref="Open"/>: the verified handle for that path when there is one, else the path now (an
///   in-process restore of a snapshot this process trusts).</item>
/// </list>
/// </summary>
public static class SnapshotFiles
{
    /// <summary>The files verified in-process for the restore running on this thread (<see cref="VerifiedScope"/>).</summary>
    [ThreadStatic]
    private static Dictionary<string, SafeFileHandle>? t_verified;

    /// <summary>A snapshot file for reading: the verified handle for <paramref name="path"/> (in-process, or the jailer's), else the path opened now.</summary>
    public static SafeFileHandle Open(string path) =>
        TakeVerified(path) ?? File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);

    /// <summary>As <see cref="Open"/>, for a file a snapshot may lack (the diff file): null when it has none.</summary>
    public static SafeFileHandle? OpenIfExists(string path) =>
        TakeVerified(path) ?? (File.Exists(path) ? File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read) : null);

    /// <summary>The size of a snapshot file (the verified handle's, without taking it), or null when there is no such file.</summary>
    public static long? Length(string path) =>
        (t_verified is { } v && v.TryGetValue(path, out var h) ? RandomAccess.GetLength(h) : (long?)null)
        ?? PreopenedFiles.Length(path, readOnly: true)
        ?? (new FileInfo(path) is { Exists: true } info ? info.Length : (long?)null);

    private static SafeFileHandle? TakeVerified(string path) =>
        (t_verified is { } v && v.Remove(path, out var h) ? h : null) ?? PreopenedFiles.Take(path, readOnly: true);

    /// <summary>True when <paramref name="directory"/>'s state file was handed over already open (by the jailer, which verified it).</summary>
    public static bool IsPreopened(string directory) =>
        !string.IsNullOrEmpty(directory) && PreopenedFiles.Length(System.IO.Path.Combine(System.IO.Path.GetFullPath(directory), SnapshotWriter.StateFileName), readOnly: true) is not null;

    /// <summary>
    /// Opens and verifies <paramref name="directory"/> and every base of its diff chain under <paramref name="keys"/>
    /// (see the class remarks); the caller owns the handles. Throws <see cref="SnapshotException"/>: Unauthenticated
    /// (unsigned, unknown key, forged, memory file changed), NotFound, Corrupt (a state file over the cap, a loop).
    /// </summary>
    public static List<OpenedSnapshotFile> OpenVerifiedChain(string directory, SnapshotKeys keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var files = new List<OpenedSnapshotFile>();
        try
        {
            string dir = System.IO.Path.GetFullPath(directory);
            if (!Directory.Exists(dir)) throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot directory {dir} does not exist");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (true)
            {
                if (!seen.Add(dir) || seen.Count > DiffRestore.MaxChain + 1)
                    throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{directory}: diff chain loops or is longer than {DiffRestore.MaxChain}");
                var state = Keep(files, OpenRequired(dir, SnapshotWriter.StateFileName), dir, SnapshotWriter.StateFileName);
                byte[] stateBytes = SnapshotReader.ReadCapped(state, System.IO.Path.Combine(dir, SnapshotWriter.StateFileName), SnapshotReader.MaxStateFileBytes, SnapshotErrorReason.Corrupt);
                byte[]? mac;
                using (var macFile = OpenOptional(dir, SnapshotMac.FileName))
                    mac = macFile is null ? null : SnapshotReader.ReadCapped(macFile, System.IO.Path.Combine(dir, SnapshotMac.FileName), SnapshotMac.MaxFileBytes, SnapshotErrorReason.Unauthenticated);
                var diffFile = OpenOptional(dir, DiffInfo.FileName);
                byte[]? diffBytes = null;
                if (diffFile is not null)
                {
                    Keep(files, diffFile, dir, DiffInfo.FileName);
                    diffBytes = SnapshotReader.ReadCapped(diffFile, System.IO.Path.Combine(dir, DiffInfo.FileName), SnapshotReader.MaxStateFileBytes, SnapshotErrorReason.Corrupt);
                }
                // Authenticated first: only then is the memory file opened, and it must be the one the MAC recorded.
                var recorded = SnapshotMac.VerifyState(dir, stateBytes, mac, diffBytes, keys);
                var memory = Keep(files, OpenRequired(dir, SnapshotWriter.MemoryFileName), dir, SnapshotWriter.MemoryFileName);
                FileIdentity identity;
                try
                {
                    identity = FileSystem.Identify(memory, System.IO.Path.Combine(dir, SnapshotWriter.MemoryFileName));
                }
                catch (IOException e)
                {
                    throw new SnapshotException(SnapshotErrorReason.IoError, e.Message, e);
                }
                SnapshotMac.VerifyMemory(dir, recorded, identity);
                if (diffBytes is null) return files;
                // Authenticated, so its base path is the one the signer wrote.
                dir = System.IO.Path.GetFullPath(DiffInfo.Decode(diffBytes, System.IO.Path.Combine(dir, DiffInfo.FileName)).BaseDirectory);
            }
        }
        catch
        {
            foreach (var f in files) f.Handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Verifies <paramref name="directory"/>'s chain (<see cref="OpenVerifiedChain"/>) and closes the files: the
    /// daemon's early check of a RestoreVm, so that a bad snapshot starts no worker.
    /// </summary>
    public static void Verify(string directory, SnapshotKeys keys)
    {
        foreach (var f in OpenVerifiedChain(directory, keys)) f.Handle.Dispose();
    }

    /// <summary>
    /// In-process verification (an unjailed worker, <c>firesharp run --restore --snapshot-key</c>): <see cref="OpenVerifiedChain"/>,
    /// and until the scope is disposed, <see cref="Open"/> on this thread returns those handles, so the restore reads
    /// exactly what was verified. Disposing closes the handles the restore did not take. Per thread, so concurrent
    /// in-process restores (tests, an in-process daemon) never take each other's handles.
    /// </summary>
    public static IDisposable VerifiedScope(string directory, SnapshotKeys keys)
    {
        var files = OpenVerifiedChain(directory, keys);
        var scope = new Scope(t_verified);
        t_verified = files.ToDictionary(f => f.Path, f => f.Handle, StringComparer.Ordinal);
        return scope;
    }

    private sealed class Scope(Dictionary<string, SafeFileHandle>? previous) : IDisposable
    {
        public void Dispose()
        {
            if (t_verified is { } v)
                foreach (var h in v.Values) h.Dispose();
            t_verified = previous;
        }
    }

    /// <summary>Opens <paramref name="name"/> in <paramref name="dir"/> on disk (never a preopened handle): NotFound when missing.</summary>
    internal static SafeFileHandle OpenRequired(string dir, string name) =>
        OpenOnDisk(dir, name) ?? throw new SnapshotException(SnapshotErrorReason.NotFound, $"snapshot {dir} has no {name} file ({System.IO.Path.Combine(dir, name)})");

    /// <summary>Opens <paramref name="name"/> in <paramref name="dir"/> on disk, or null when it does not exist.</summary>
    internal static SafeFileHandle? OpenOptional(string dir, string name) => OpenOnDisk(dir, name);

    private static SafeFileHandle? OpenOnDisk(string dir, string name)
    {
        string path = System.IO.Path.Combine(dir, name);
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotException(SnapshotErrorReason.IoError, $"cannot open {path}: {e.Message}", e);
        }
    }

    private static SafeFileHandle Keep(List<OpenedSnapshotFile> files, SafeFileHandle handle, string dir, string name)
    {
        files.Add(new OpenedSnapshotFile(System.IO.Path.Combine(dir, name), handle));
        return handle;
    }
}
