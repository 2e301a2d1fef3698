using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>The few POSIX calls durable, no-replace publishing needs and .NET does not expose.</summary>
public static partial class FileSystem
{
    private const int AtFdCwd = -100;
    private const uint RenameNoReplaceFlag = 1;
    public const int ENOSPC = 28, EEXIST = 17, EDQUOT = 122;

    [LibraryImport("libc", EntryPoint = "renameat2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int RenameAt2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

    /// <summary>
    /// rename(2) that never replaces an existing target (also an empty directory): false when the target exists
    /// (EEXIST); any other failure is an <see cref="IOException"/> whose HResult is the errno.
    /// </summary>
    public static bool TryRenameNoReplace(string from, string to)
    {
        if (RenameAt2(AtFdCwd, from, AtFdCwd, to, RenameNoReplaceFlag) == 0) return true;
        int err = Errno.Last;
        if (err == EEXIST) return false;
        throw Errno.IOError($"rename {from} -> {to}", err);
    }

    [LibraryImport("libc", EntryPoint = "mkdir", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int MkDir(string path, uint mode);

    /// <summary>
    /// Creates one directory with exactly <paramref name="mode"/>, whatever the umask (mkdir, then chmod of what
    /// mkdir made): true if it was created, false if something already had that name (EEXIST: not followed, not
    /// changed). Any other failure is an <see cref="IOException"/> whose HResult is the errno.
    /// </summary>
    public static bool TryCreateDirectory(string path, UnixFileMode mode)
    {
        if (MkDir(path, (uint)mode) != 0)
        {
            int err = Errno.Last;
            if (err == EEXIST) return false;
            throw Errno.IOError($"mkdir {path}", err);
        }
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, mode); // the umask may have taken bits away
        return true;
    }

    /// <summary>fsync of a directory, so that entries created or renamed in it survive a crash.</summary>
    public static void SyncDirectory(string path)
    {
        int fd = Descriptors.Open(path, Descriptors.ORdOnly | Descriptors.ODirectory | Descriptors.OCloexec);
        if (fd < 0) throw Errno.LastIOError($"open {path}");
        try
        {
            if (Descriptors.Sync(fd) != 0)
            {
                int err = Errno.Last;
                if (err is not Errno.EINVAL) // the file system cannot sync directories (fine)
                    throw Errno.IOError($"fsync {path}", err);
            }
        }
        finally
        {
            _ = Descriptors.Close(fd); // a read-only directory fd: close has nothing to report that fsync did not
        }
    }

    public static void Sync(SafeFileHandle file, string path)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (Descriptors.Sync((int)file.DangerousGetHandle()) != 0) throw Errno.LastIOError($"fsync {path}");
    }

    /// <summary>
    /// fstat(2) of an open file: its device, inode, size and mtime (ns since the epoch). A snapshot records these
    /// for its memory file, so a file replaced or changed after the snapshot is noticed.
    /// </summary>
    public static FileIdentity Identify(SafeFileHandle file, string path)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (Descriptors.FStat((int)file.DangerousGetHandle(), out var st) != 0) throw Errno.LastIOError($"fstat {path}");
        return new FileIdentity(st.Dev, st.Ino, st.Size, (st.MTime * 1_000_000_000L) + st.MTimeNs);
    }

    /// <summary>
    /// True for "no space left" (ENOSPC, or EDQUOT: a quota is a full disk too), decided by the errno alone: on
    /// Linux the IOException .NET throws for a failed read or write carries the errno as its HResult, and so does
    /// every <see cref="Errno.IOError"/>. The message is never read (it is localizable text).
    /// </summary>
    public static bool IsDiskFull(IOException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return e.HResult is ENOSPC or EDQUOT;
    }
}

/// <summary>What fstat says identifies a file's content: device and inode (which file), size and mtime in ns (which version).</summary>
public readonly record struct FileIdentity(ulong Device, ulong Inode, long Size, long MtimeNs);
