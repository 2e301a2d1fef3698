using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Linux x86_64 errno values as constants, the errno of the last call (<see cref="Last"/>), the one place an errno
/// becomes text for a message ("EINVAL (Invalid argument)") and the one place a failed call becomes an exception
/// (<see cref="IOError"/>; the layers above wrap errno in their own typed exceptions, e.g. KvmException,
/// GuestMemoryMapException, JailSetupException, each built from <see cref="Last"/> and <see cref="Text"/>).
/// </summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9, EAGAIN = 11,
        ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, EMFILE = 24,
        ENOTTY = 25, ENOSPC = 28, EDQUOT = 122, EOPNOTSUPP = 95;

    /// <summary>
    /// The errno of the last call in this namespace that failed: every P/Invoke here is declared with SetLastError,
    /// so this is what the kernel said, read right after the call (before anything else can overwrite it).
    /// </summary>
    public static int Last => Marshal.GetLastPInvokeError();

    /// <summary>The errno's name and strerror text, e.g. "ENOMEM (Cannot allocate memory)".</summary>
    public static string Text(int errno) => $"{Name(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";

    /// <summary>The errno of the last P/Invoke made with SetLastError, as text.</summary>
    public static string LastText() => Text(Last);

    /// <summary>
    /// A failed call as an exception: an <see cref="IOException"/> whose message names the call and the errno
    /// ("epoll_ctl: EBADF (Bad file descriptor)") and whose HResult is the errno, so callers decide by number
    /// (e.g. <see cref="FileSystem.IsDiskFull"/>), never by message.
    /// </summary>
    public static IOException IOError(string operation, int errno) => new($"{operation}: {Text(errno)}", errno);

    /// <summary><see cref="IOError"/> for the errno of the last call.</summary>
    public static IOException LastIOError(string operation) => IOError(operation, Last);

    private static string Name(int errno) => errno switch
    {
        EPERM => "EPERM", ENOENT => "ENOENT", EINTR => "EINTR", EIO => "EIO", EBADF => "EBADF", EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM", EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY", EEXIST => "EEXIST",
        ENODEV => "ENODEV", EINVAL => "EINVAL", EMFILE => "EMFILE", ENOTTY => "ENOTTY", ENOSPC => "ENOSPC",
        EDQUOT => "EDQUOT", EOPNOTSUPP => "EOPNOTSUPP", E2BIG => "E2BIG", ENXIO => "ENXIO",
        _ => $"errno {errno}",
    };
}
