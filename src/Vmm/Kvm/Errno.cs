namespace FireSharp.Kvm;

/// <summary>Linux x86_64 errno values as constants (Tmds.LibC exposes them as properties, unusable in patterns).</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, EBADF = 9, EAGAIN = 11,
        ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, EMFILE = 24,
        ENOTTY = 25, ENOSPC = 28, EOPNOTSUPP = 95;
}
