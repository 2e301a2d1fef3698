using System.Globalization;
using FireSharp.Kvm.Interop;
using FireSharp.Snapshot;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// Puts a snapshot a worker wrote into a staging directory (a jailed worker's outbox, an unjailed one's in the VM's
/// state directory) where CreateSnapshot.dir asked, through fds only (docs/security.md, "Snapshot directory"):
/// <list type="number">
/// <item>The staging directory is opened O_NOFOLLOW relative to its parent's fd and made the daemon's (fchown,
/// fchmod 0700 on that fd) before anything in it is looked at; after that the worker can no longer change it.
/// Every entry is opened O_NOFOLLOW relative to it and must be a regular file (made 0400 and the daemon's on its own
/// fd); anything else (a symlink, a directory, a FIFO) is refused.</item>
/// <item>It is signed through that fd (<c>/proc/self/fd/N</c>), so the daemon signs exactly what it checked.</item>
/// <item>It is renamed (renameat2 RENAME_NOREPLACE) from the staging parent's fd to the name in the target's
/// parent fd, which the path policy opened beneath an allowed root; then the entry at the target is checked to be
/// that very directory. Across file systems (EXDEV) the files are copied instead, through fds, into a new 0700
/// directory made with mkdirat in that parent, signed there, and renamed into place.</item>
/// </list>
/// Nothing is done by the target's path string after the policy's check, so a parent swapped for a symlink meanwhile
/// changes nothing: the snapshot lands in the directory that was checked.
/// </summary>
internal static class SnapshotPlacement
{
    private const uint DirMode = 0x1C0, FileMode = 0x100; // 0700, 0400
    private const int Page = 4096;

    /// <summary>Moves (or copies) <paramref name="staging"/> to <paramref name="name"/> in <paramref name="parent"/>, signed with <paramref name="key"/>.</summary>
    public static void Place(string staging, SafeFileHandle parent, string name, string target, SnapshotKey key)
    {
        string stagingParentPath = Path.GetDirectoryName(staging) ?? "/", stagingName = Path.GetFileName(staging);
        using var stagingParent = Open(null, stagingParentPath, PathOpen.OPath | PathOpen.ODirectory, "the snapshot's staging directory");
        using var dir = Open(stagingParent, stagingName, PathOpen.ORdOnly | PathOpen.ODirectory | PathOpen.ONoFollow, "the worker's snapshot");
        var files = MakePrivate(dir, staging);
        int rc = DirFd.RenameAt(stagingParent, stagingName, parent, name);
        if (rc == 0)
        {
            // The name in a worker-writable outbox might have been swapped before the rename: the target must be our directory.
            using var placed = Open(parent, name, PathOpen.OPath | PathOpen.ONoFollow, target);
            if (!Same(PathOpen.Status(placed), PathOpen.Status(dir)))
                throw new SnapshotException(SnapshotErrorReason.IoError, $"the VM's outbox changed while its snapshot was moved to {target}; refused");
            try
            {
                SnapshotMac.Sign(Self(dir), key);
            }
            catch
            {
                TryDelete(Path.Combine(Self(parent), name)); // an unsigned snapshot is not left at the target
                throw;
            }
            return;
        }
        if (rc == DirFd.EEXIST) throw new SnapshotException(SnapshotErrorReason.DirectoryExists, $"snapshot directory {target} already exists");
        if (rc != PathOpen.EXDEV) throw new IOException($"cannot move the snapshot to {target}: {Errno.Text(rc)}", rc);
        CopyAcross(dir, files, parent, name, target, key);
        TryDelete(staging);
    }

    /// <summary>Makes the staging directory and its files the daemon's (0700, 0400) through fds; returns the file names.</summary>
    private static List<string> MakePrivate(SafeFileHandle dir, string staging)
    {
        Own(dir, staging);
        Check(DirFd.Chmod(dir, DirMode), staging);
        var names = Directory.EnumerateFileSystemEntries(Self(dir)).Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal).ToList();
        foreach (var name in names)
        {
            using var entry = Open(dir, name, PathOpen.OPath | PathOpen.ONoFollow, name);
            if (PathOpen.Status(entry).Type != PathOpen.SIfReg)
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"the VM's snapshot holds {name}, which is not a regular file: refused");
            using var file = Reopen(entry, PathOpen.ORdOnly, name);
            Own(file, name);
            Check(DirFd.Chmod(file, FileMode), name);
        }
        return names;
    }

    private static void CopyAcross(SafeFileHandle source, List<string> files, SafeFileHandle parent, string name, string target, SnapshotKey key)
    {
        string temp = $".{name}.partial-{Guid.NewGuid():N}";
        int rc = DirFd.MkDirAt(parent, temp, DirMode);
        if (rc == DirFd.EEXIST) throw new SnapshotException(SnapshotErrorReason.DirectoryExists, $"snapshot directory {target} is being created by someone else");
        if (rc != 0) throw new IOException($"mkdir in the parent of {target}: {Errno.Text(rc)}", rc);
        bool placed = false;
        try
        {
            CopyInto(parent, temp, source, files, name, target, key);
            placed = true;
        }
        finally
        {
            // A failed copy (a full disk, a refused rename) leaves no partial directory behind; the path goes through the
            // parent's fd, so it is the directory made above whatever happened to the parent's path meanwhile.
            if (!placed) TryDelete(Path.Combine(Self(parent), temp));
        }
    }

    private static void CopyInto(SafeFileHandle parent, string temp, SafeFileHandle source, List<string> files, string name, string target, SnapshotKey key)
    {
        using var copy = Open(parent, temp, PathOpen.ORdOnly | PathOpen.ODirectory | PathOpen.ONoFollow, target);
        var st = PathOpen.Status(copy);
        if (st.Type != PathOpen.SIfDir || st.Uid != ProcInfo.EffectiveUserId)
            throw new SnapshotException(SnapshotErrorReason.IoError, $"the directory made for {target} was replaced meanwhile; refused");
        Check(DirFd.Chmod(copy, DirMode), target);
        foreach (var f in files.Where(f => f != SnapshotMac.FileName)) // the MAC records the memory file's inode: signed again below
        {
            using var from = Open(source, f, PathOpen.ORdOnly | PathOpen.ONoFollow, f);
            using var to = DirFd.OpenAt(copy, f, DirFd.OWrOnly | DirFd.OCreat | DirFd.OExcl | PathOpen.ONoFollow, out int errno, FileMode);
            if (to.IsInvalid) throw new IOException($"create {f} for {target}: {Errno.Text(errno)}", errno);
            CopySparse(from, to);
            Check(DirFd.Sync(to), f);
        }
        SnapshotMac.Sign(Self(copy), key);
        int rc = DirFd.RenameAt(parent, temp, parent, name);
        if (rc == DirFd.EEXIST) throw new SnapshotException(SnapshotErrorReason.DirectoryExists, $"snapshot directory {target} already exists");
        if (rc != 0) throw new IOException($"rename into {target}: {Errno.Text(rc)}", rc);
    }

    /// <summary>Copies a file keeping its holes: pages of zeros are not written (guest memory is mostly zeros).</summary>
    private static void CopySparse(SafeFileHandle from, SafeFileHandle to)
    {
        long length = RandomAccess.GetLength(from);
        var buffer = new byte[1 << 20];
        for (long offset = 0; offset < length;)
        {
            int n = RandomAccess.Read(from, buffer, offset);
            if (n <= 0) break;
            for (int p = 0; p < n; p += Page)
            {
                var page = buffer.AsSpan(p, Math.Min(Page, n - p));
                if (page.ContainsAnyExcept((byte)0)) RandomAccess.Write(to, page, offset + p);
            }
            offset += n;
        }
        RandomAccess.SetLength(to, length);
    }

    private static void Own(SafeFileHandle file, string what)
    {
        // A jailed worker wrote as the VM's uid: root takes it. An unjailed worker is the daemon's own user already.
        if (Environment.IsPrivilegedProcess) Check(DirFd.Chown(file, 0, 0), what);
    }

    private static bool Same(PathOpen.FileStatus a, PathOpen.FileStatus b) => a.Device == b.Device && a.Inode == b.Inode;

    private static string Self(SafeFileHandle fd) => "/proc/self/fd/" + ((int)fd.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);

    private static SafeFileHandle Reopen(SafeFileHandle pathFd, int flags, string what)
    {
        var fd = PathOpen.Open(Self(pathFd), flags, out int errno);
        return fd.IsInvalid ? throw new IOException($"open {what}: {Errno.Text(errno)}", errno) : fd;
    }

    private static SafeFileHandle Open(SafeFileHandle? dir, string name, int flags, string what)
    {
        int errno;
        var fd = dir is null ? PathOpen.Open(name, flags, out errno) : DirFd.OpenAt(dir, name, flags, out errno);
        if (!fd.IsInvalid) return fd;
        if (errno == PathOpen.ELOOP || errno == PathOpen.ENOTDIR)
            throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{what} is a symbolic link or not a directory: refused");
        throw new IOException($"open {what}: {Errno.Text(errno)}", errno);
    }

    private static void Check(int errno, string what)
    {
        if (errno != 0) throw new IOException($"{what}: {Errno.Text(errno)}", errno);
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
