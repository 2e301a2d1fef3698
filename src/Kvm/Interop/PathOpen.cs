using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// openat2(2) with RESOLVE_BENEATH (a path resolved under a directory fd that no symlink and no ".." can leave),
/// fstat(2) of an fd (the file's type and identity), and open file description locks (F_OFD_SETLK) for
/// <c>FireSharp.Kvm.Files.PathPolicy</c> and the daemon's image locks. x86_64 Linux numbers.
/// </summary>
public static partial class PathOpen
{
    public const int ORdOnly = 0, ORdWr = 2, ODirectory = 0x10000, ONoFollow = 0x20000, OCloexec = 0x80000, OPath = 0x200000;
    public const ulong ResolveNoXdev = 0x01, ResolveNoMagicLinks = 0x02, ResolveNoSymlinks = 0x04, ResolveBeneath = 0x08;
    public const int EXDEV = 18, ELOOP = 40, ENOSYS = 38, ENOTDIR = 20, EISDIR = 21, ENXIO = 6, EAGAIN = 11, EACCES = 13, ENOENT = 2;
    private const long SysOpenAt2 = 437;
    private const int FOfdSetLk = 37;
    private const short FRdLck = 0, FWrLck = 1, FUnLck = 2;

    /// <summary>The file types of <c>st_mode &amp; S_IFMT</c>.</summary>
    public const uint SIfMt = 0xF000, SIfReg = 0x8000, SIfDir = 0x4000, SIfBlk = 0x6000, SIfChr = 0x2000, SIfIfo = 0x1000, SIfSock = 0xC000, SIfLnk = 0xA000;

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct FLock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Len;
        public int Pid;
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long OpenAt2Native(long number, int dirfd, string path, ref OpenHow how, nuint size);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlLock(int fd, int cmd, ref FLock lk);

    /// <summary>What fstat says of an open file: its type bits (<see cref="SIfMt"/>), identity, size, permission bits (07777) and owner.</summary>
    public readonly record struct FileStatus(uint Type, ulong Device, ulong Inode, long Size, uint Permissions = 0, uint Uid = 0, uint Gid = 0);

    /// <summary>open(2) of an absolute path with <paramref name="flags"/> (O_CLOEXEC added); the errno on failure.</summary>
    public static SafeFileHandle Open(string path, int flags, out int errno)
    {
        int fd = Descriptors.Open(path, flags | OCloexec);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>
    /// openat2(dirfd, relative, {flags | O_CLOEXEC, resolve}); an invalid handle and the errno on failure (ENOSYS
    /// on kernels before 5.6, EXDEV when the path would leave the directory under RESOLVE_BENEATH).
    /// </summary>
    public static SafeFileHandle OpenBeneath(SafeFileHandle dir, string relative, int flags, ulong resolve, out int errno)
    {
        ArgumentNullException.ThrowIfNull(dir);
        var how = new OpenHow { Flags = (ulong)(uint)(flags | OCloexec), Resolve = resolve };
        bool added = false;
        try
        {
            dir.DangerousAddRef(ref added);
            long fd = OpenAt2Native(SysOpenAt2, (int)dir.DangerousGetHandle(), relative, ref how, (nuint)Marshal.SizeOf<OpenHow>());
            errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
            return new SafeFileHandle((nint)fd, ownsHandle: true);
        }
        finally
        {
            if (added) dir.DangerousRelease();
        }
    }

    /// <summary>fstat of an open file; an <see cref="IOException"/> with the errno if it fails.</summary>
    public static FileStatus Status(SafeFileHandle file)
    {
        ArgumentNullException.ThrowIfNull(file);
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            if (Descriptors.FStat((int)file.DangerousGetHandle(), out var st) != 0)
            {
                int err = Marshal.GetLastPInvokeError();
                throw new IOException("fstat: " + Errno.Text(err), err);
            }
            return new FileStatus(st.Mode & SIfMt, st.Dev, st.Ino, st.Size, st.Mode & 0xFFF, st.Uid, st.Gid);
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }

    /// <summary>
    /// Takes an open file description lock on the whole file (F_OFD_SETLK: shared for <paramref name="exclusive"/>
    /// false, else exclusive), without waiting: false when a conflicting lock is held (by any process, or another
    /// open of the file in this one). The lock lives as long as the open file description, so closing the handle
    /// releases it. Any other failure is an <see cref="IOException"/>.
    /// </summary>
    public static bool TryLock(SafeFileHandle file, bool exclusive)
    {
        ArgumentNullException.ThrowIfNull(file);
        var lk = new FLock { Type = exclusive ? FWrLck : FRdLck, Whence = 0, Start = 0, Len = 0, Pid = 0 };
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            if (FcntlLock((int)file.DangerousGetHandle(), FOfdSetLk, ref lk) == 0) return true;
            int err = Marshal.GetLastPInvokeError();
            if (err is EAGAIN or EACCES) return false;
            throw new IOException("fcntl(F_OFD_SETLK): " + Errno.Text(err), err);
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }

    /// <summary>Releases a lock taken by <see cref="TryLock"/> (closing the handle does too).</summary>
    public static void Unlock(SafeFileHandle file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var lk = new FLock { Type = FUnLck };
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            _ = FcntlLock((int)file.DangerousGetHandle(), FOfdSetLk, ref lk); // unlocking what is not locked is no error
        }
        finally
        {
            if (added) file.DangerousRelease();
        }
    }
}
