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

    /// <summary>True for "no space left" (ENOSPC, or EDQUOT: a quota is a full disk too).</summary>
    public static bool IsDiskFull(IOException e) =>
        e.HResult is ENOSPC or EDQUOT || (e.HResult & 0xffff) is ENOSPC or EDQUOT
        || e.Message.Contains("No space left on device", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("quota exceeded", StringComparison.OrdinalIgnoreCase);
}
