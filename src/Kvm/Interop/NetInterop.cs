using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The syscalls of the tap backend, declared with spans and values so that no unsafe code is needed:
/// read, write, ioctl, socketpair (open and close are <see cref="Descriptors"/>'s). errno comes back through <see cref="Errno.Last"/>.
/// </summary>
public static partial class NetInterop
{
    public const int O_RDWR = 2, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000;
    public const int AF_UNIX = 1, SOCK_SEQPACKET = 5, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int ENOENT = 2, EINTR = 4, EIO = 5, ENXIO = 6, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EBUSY = 16,
        ENODEV = 19, EINVAL = 22, ENOBUFS = 105, EPERM = 1, EBADFD = 77;

    /// <summary>IFNAMSIZ: an interface name is at most 15 bytes and a NUL.</summary>
    public const int IfNameSize = 16;

    /// <summary>struct ifreq is 40 bytes on x86-64: ifr_name[16], then a 24-byte union whose ifr_flags is a short at offset 16.</summary>
    public const int IfReqSize = 40, IfReqFlagsOffset = 16;

    public const short IFF_TAP = 0x0002, IFF_PERSIST = 0x0800, IFF_NO_PI = 0x1000, IFF_VNET_HDR = 0x4000;
    public const uint TUN_F_CSUM = 0x01, TUN_F_TSO4 = 0x02, TUN_F_TSO6 = 0x04;

    // _IOW('T', n, int) = 0x40000000 | (4 << 16) | ('T' << 8) | n; _IOR sets 0x80000000 instead.
    public const uint TUNSETIFF = 0x400454ca;        // ifreq* in/out
    public const uint TUNGETIFF = 0x800454d2;        // ifreq* out: the attached device's name and flags
    public const uint TUNSETPERSIST = 0x400454cb;    // int value, not a pointer
    public const uint TUNGETFEATURES = 0x800454cf;   // unsigned int* out
    public const uint TUNSETOFFLOAD = 0x400454d0;    // unsigned int value (TUN_F_*), not a pointer
    public const uint TUNSETVNETHDRSZ = 0x400454d8;  // int* in

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, Span<byte> buffer, nint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, ReadOnlySpan<byte> buffer, nint count);

    /// <summary>ioctl with a pointer argument (the span's bytes).</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlBuffer(int fd, nuint request, Span<byte> arg);

    /// <summary>ioctl with a plain integer argument (TUNSETPERSIST, TUNSETOFFLOAD).</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlValue(int fd, nuint request, nuint arg);

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, Span<int> fds);

}
