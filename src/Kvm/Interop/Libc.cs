using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The few syscalls the virtio devices need (eventfd, poll, fdatasync), declared with by-ref and span
/// parameters so that no unsafe code is needed outside Kvm/ and Memory/. errno comes back through
/// <see cref="Errno.Last"/>.
/// </summary>
public static partial class Libc
{
    public const int EFD_NONBLOCK = 0x800, EFD_CLOEXEC = 0x80000;
    public const short POLLIN = 0x1;
    public const int EINTR = 4, EAGAIN = 11;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initialValue, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, ref ulong value, nint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, ref ulong value, nint count);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(Span<PollFd> fds, ulong count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int FdataSync(int fd);

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial nint RealPathNative(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);

    /// <summary>realpath(3): absolute, with every symlink and "." / ".." resolved; null when the path does not resolve.</summary>
    public static string? RealPath(string path)
    {
        nint p = RealPathNative(path, 0);
        if (p == 0) return null;
        try { return Marshal.PtrToStringUTF8(p); }
        finally { Free(p); }
    }

}
