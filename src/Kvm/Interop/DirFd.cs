using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The *at(2) calls that act on a name relative to an open directory fd, never on a path string from the root:
/// openat, mkdirat, readlinkat, renameat2, fchmod, fchown. With them, what was checked (the directory fd the path
/// policy opened) is what is written into, whatever the path names meanwhile. Each returns 0 or the errno.
/// </summary>
public static partial class DirFd
{
    public const int OCreat = 0x40, OExcl = 0x80, OWrOnly = 1;
    public const int EEXIST = 17;
    private const uint RenameNoReplace = 1;

    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenAtNative(int dirfd, string name, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MkDirAtNative(int dirfd, string name, uint mode);

    [LibraryImport("libc", EntryPoint = "readlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint ReadLinkAtNative(int dirfd, string name, byte[] buffer, nuint size);

    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt2Native(int olddirfd, string oldname, int newdirfd, string newname, uint flags);

    [LibraryImport("libc", EntryPoint = "fchmod", SetLastError = true)]
    private static partial int FchmodNative(int fd, uint mode);

    [LibraryImport("libc", EntryPoint = "fchown", SetLastError = true)]
    private static partial int FchownNative(int fd, uint uid, uint gid);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FsyncNative(int fd);

    /// <summary>openat(dir, name, flags | O_CLOEXEC, mode); an invalid handle and the errno on failure.</summary>
    public static SafeFileHandle OpenAt(SafeFileHandle dir, string name, int flags, out int errno, uint mode = 0)
    {
        int fd = With(dir, d => OpenAtNative(d, name, flags | PathOpen.OCloexec, mode));
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>mkdirat(dir, name, mode) (the umask applies: callers fchmod what they then open): 0 or the errno.</summary>
    public static int MkDirAt(SafeFileHandle dir, string name, uint mode) =>
        With(dir, d => MkDirAtNative(d, name, mode)) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>readlinkat(dir, name): the link's target, or null and the errno (EINVAL: not a symlink).</summary>
    public static string? ReadLinkAt(SafeFileHandle dir, string name, out int errno)
    {
        var buffer = new byte[4097];
        nint n = With(dir, d => (int)ReadLinkAtNative(d, name, buffer, (nuint)buffer.Length));
        errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
        if (n < 0) return null;
        if (n >= buffer.Length) { errno = 36; return null; } // ENAMETOOLONG
        return System.Text.Encoding.UTF8.GetString(buffer, 0, (int)n);
    }

    /// <summary>renameat2(from, fromName, to, toName, RENAME_NOREPLACE when <paramref name="noReplace"/>): 0 or the errno (EEXIST, EXDEV...).</summary>
    public static int RenameAt(SafeFileHandle from, string fromName, SafeFileHandle to, string toName, bool noReplace = true) =>
        With(from, f => With(to, t => RenameAt2Native(f, fromName, t, toName, noReplace ? RenameNoReplace : 0))) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>fchmod: 0 or the errno.</summary>
    public static int Chmod(SafeFileHandle file, uint mode) => With(file, f => FchmodNative(f, mode)) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>fchown: 0 or the errno.</summary>
    public static int Chown(SafeFileHandle file, uint uid, uint gid) => With(file, f => FchownNative(f, uid, gid)) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>fsync (of a file, or of a directory opened O_RDONLY): 0 or the errno.</summary>
    public static int Sync(SafeFileHandle file) => With(file, f => FsyncNative(f)) == 0 ? 0 : Marshal.GetLastPInvokeError();

    private static int With(SafeFileHandle handle, Func<int, int> call)
    {
        ArgumentNullException.ThrowIfNull(handle);
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return call((int)handle.DangerousGetHandle());
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }
}
