using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>The few POSIX calls durable, no-replace publishing needs and .NET does not expose.</summary>
public static partial class FileSystem
{
    private const int AtFdCwd = -100;
    private const uint RenameNoReplaceFlag = 1;
    private const int ORdOnly = 0, ODirectory = 0x10000, OCloexec = 0x80000; // x86_64 <fcntl.h>
    public const int ENOSPC = 28, EEXIST = 17, EDQUOT = 122;

    [LibraryImport("libc", EntryPoint = "renameat2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int RenameAt2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    /// <summary>
    /// rename(2) that never replaces an existing target (also an empty directory): false when the target exists
    /// (EEXIST); any other failure is an <see cref="IOException"/> whose HResult is the errno.
    /// </summary>
    public static bool TryRenameNoReplace(string from, string to)
    {
        if (RenameAt2(AtFdCwd, from, AtFdCwd, to, RenameNoReplaceFlag) == 0) return true;
        int err = Marshal.GetLastPInvokeError();
        if (err == EEXIST) return false;
        throw new IOException($"rename {from} -> {to}: {Marshal.GetPInvokeErrorMessage(err)}", err);
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
            int err = Marshal.GetLastPInvokeError();
            if (err == EEXIST) return false;
            throw new IOException($"mkdir {path}: {Marshal.GetPInvokeErrorMessage(err)}", err);
        }
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, mode); // the umask may have taken bits away
        return true;
    }

    /// <summary>fsync of a directory, so that entries created or renamed in it survive a crash.</summary>
    public static void SyncDirectory(string path)
    {
        int fd = Open(path, ORdOnly | ODirectory | OCloexec);
        if (fd < 0)
        {
            int err = Marshal.GetLastPInvokeError();
            throw new IOException($"open {path}: {Marshal.GetPInvokeErrorMessage(err)}", err);
        }
        try
        {
            if (Tmds.Linux.LibC.fsync(fd) != 0)
            {
                int err = Tmds.Linux.LibC.errno;
                if (err is not 22) // EINVAL: the file system cannot sync directories (fine)
                    throw new IOException($"fsync {path}: {Marshal.GetPInvokeErrorMessage(err)}", err);
            }
        }
        finally
        {
            _ = Tmds.Linux.LibC.close(fd); // a read-only directory fd: close has nothing to report that fsync did not
        }
    }

    public static void Sync(SafeFileHandle file, string path)
    {
        if (Tmds.Linux.LibC.fsync((int)file.DangerousGetHandle()) != 0)
        {
            int err = Tmds.Linux.LibC.errno;
            throw new IOException($"fsync {path}: {Marshal.GetPInvokeErrorMessage(err)}", err);
        }
    }

    /// <summary>
    /// fstat(2) of an open file: its device, inode, size and mtime (ns since the epoch). A snapshot records these
    /// for its memory file, so a file replaced or changed after the snapshot is noticed.
    /// </summary>
    public static unsafe FileIdentity Identify(SafeFileHandle file, string path)
    {
        ArgumentNullException.ThrowIfNull(file);
        Tmds.Linux.stat st;
        if (Tmds.Linux.LibC.fstat((int)file.DangerousGetHandle(), &st) != 0)
        {
            int err = Tmds.Linux.LibC.errno;
            throw new IOException($"fstat {path}: {Marshal.GetPInvokeErrorMessage(err)}", err);
        }
        return new FileIdentity((ulong)st.st_dev, (ulong)st.st_ino, (long)st.st_size, ((long)st.st_mtim.tv_sec * 1_000_000_000L) + (long)st.st_mtim.tv_nsec);
    }

    /// <summary>True for "no space left" (ENOSPC, or EDQUOT: a quota is a full disk too).</summary>
    public static bool IsDiskFull(IOException e) =>
        e.HResult is ENOSPC or EDQUOT || (e.HResult & 0xffff) is ENOSPC or EDQUOT
        || e.Message.Contains("No space left on device", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("quota exceeded", StringComparison.OrdinalIgnoreCase);
}

/// <summary>What fstat says identifies a file's content: device and inode (which file), size and mtime in ns (which version).</summary>
public readonly record struct FileIdentity(ulong Device, ulong Inode, long Size, long MtimeNs);
