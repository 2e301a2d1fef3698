using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>ioctl(2), the syscall every KVM request goes through (the request numbers are in <see cref="KvmIoctls"/>).</summary>
public static unsafe partial class Ioctl
{
    /// <summary>ioctl(fd, request, arg); -1 and <see cref="Errno.Last"/> on failure.</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Invoke(int fd, nuint request, void* arg);
}
