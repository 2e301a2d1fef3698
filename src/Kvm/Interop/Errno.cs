using System.Runtime.InteropServices;
using static Tmds.Linux.LibC;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Linux x86_64 errno values as constants (Tmds.LibC exposes them as properties, unusable in patterns), and the
/// one place an errno becomes text for a message: "EINVAL (Invalid argument)".
/// </summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9, EAGAIN = 11,
        ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, EMFILE = 24,
        ENOTTY = 25, ENOSPC = 28, EDQUOT = 122, EOPNOTSUPP = 95;

    /// <summary>The errno's name and strerror text, e.g. "ENOMEM (Cannot allocate memory)".</summary>
    public static unsafe string Text(int errno)
    {
        byte* buf = stackalloc byte[256];
        string text = strerror_r(errno, buf, 256) == 0 ? Marshal.PtrToStringUTF8((nint)buf) ?? "" : $"errno {errno}";
        return $"{Name(errno)} ({text})";
    }

    /// <summary>The errno of the last P/Invoke made with SetLastError, as text.</summary>
    public static string LastText() => Text(Marshal.GetLastPInvokeError());

    private static string Name(int errno) => errno switch
    {
        EPERM => "EPERM", ENOENT => "ENOENT", EINTR => "EINTR", EIO => "EIO", EBADF => "EBADF", EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM", EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY", EEXIST => "EEXIST",
        ENODEV => "ENODEV", EINVAL => "EINVAL", EMFILE => "EMFILE", ENOTTY => "ENOTTY", ENOSPC => "ENOSPC",
        EDQUOT => "EDQUOT", EOPNOTSUPP => "EOPNOTSUPP", E2BIG => "E2BIG", ENXIO => "ENXIO",
        _ => $"errno {errno}",
    };
}
