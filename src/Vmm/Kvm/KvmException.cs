using System.Runtime.InteropServices;
using static Tmds.Linux.LibC;

namespace FireSharp.Kvm;

/// <summary>
/// A KVM ioctl (or the syscall around it) failed. The one place where errno becomes an exception:
/// the message names the operation and the errno text, e.g. "KVM_CREATE_VCPU failed: EINVAL (Invalid argument)".
/// </summary>
public sealed class KvmException(string operation, int errno, string? detail = null)
    : Exception($"{operation} failed: {ErrnoText(errno)}{(detail is null ? "" : " — " + detail)}")
{
    public string Operation { get; } = operation;
    public int Errno { get; } = errno;

    public static unsafe string ErrnoText(int errno)
    {
        byte* buf = stackalloc byte[256];
        string text = strerror_r(errno, buf, 256) == 0 ? Marshal.PtrToStringUTF8((nint)buf) ?? "" : $"errno {errno}";
        return $"{ErrnoName(errno)} ({text})";
    }

    private static string ErrnoName(int errno) => errno switch
    {
        1 => "EPERM", 2 => "ENOENT", 4 => "EINTR", 5 => "EIO", 9 => "EBADF", 11 => "EAGAIN", 12 => "ENOMEM",
        13 => "EACCES", 14 => "EFAULT", 16 => "EBUSY", 17 => "EEXIST", 19 => "ENODEV", 22 => "EINVAL",
        24 => "EMFILE", 25 => "ENOTTY", 28 => "ENOSPC", 95 => "EOPNOTSUPP", 7 => "E2BIG", 6 => "ENXIO",
        _ => $"errno {errno}",
    };
}
