using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Files;

/// <summary>
/// The path policy's resolution where openat2(2) is missing (Linux before 5.6, ENOSYS) or the walk is forced
/// (<see cref="PathPolicy.NoFollowWalk"/>): the relative path is walked one component at a time from the root's fd,
/// each directory opened openat(O_PATH | O_DIRECTORY | O_NOFOLLOW) relative to the previous one and the last
/// component openat(flags | O_NOFOLLOW). No symlink is followed (not even one that stays inside: that needs
/// openat2's RESOLVE_BENEATH), "." and ".." are refused, so the walk cannot leave the root. A refusal is ELOOP
/// (a symlink on the way), EXDEV (a dot component), or the errno openat gave.
/// </summary>
internal static class NoFollowResolver
{
    public static SafeFileHandle Open(SafeFileHandle root, string relative, int flags, out int errno)
    {
        if (relative == ".") return DirFd.OpenAt(root, ".", flags, out errno);
        var parts = relative.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0 || parts.Any(p => p is "." or ".."))
        {
            errno = PathOpen.EXDEV;
            return new SafeFileHandle(-1, ownsHandle: true);
        }
        SafeFileHandle current = root;
        try
        {
            for (int i = 0; i < parts.Length - 1; i++)
            {
                var next = DirFd.OpenAt(current, parts[i], PathOpen.OPath | PathOpen.ODirectory | PathOpen.ONoFollow, out errno);
                if (next.IsInvalid)
                {
                    if (errno == PathOpen.ENOTDIR && IsSymlink(current, parts[i])) errno = PathOpen.ELOOP;
                    return next;
                }
                if (current != root) current.Dispose();
                current = next;
            }
            string last = parts[^1];
            var fd = DirFd.OpenAt(current, last, flags | PathOpen.ONoFollow, out errno);
            if (fd.IsInvalid)
            {
                if (errno == PathOpen.ENOTDIR && IsSymlink(current, last)) errno = PathOpen.ELOOP;
                return fd;
            }
            if ((flags & PathOpen.OPath) != 0 && PathOpen.Status(fd).Type == PathOpen.SIfLnk)
            {
                // O_PATH | O_NOFOLLOW opens the link itself: a symlink at the end is refused like one on the way.
                fd.Dispose();
                errno = PathOpen.ELOOP;
                return new SafeFileHandle(-1, ownsHandle: true);
            }
            return fd;
        }
        finally
        {
            if (current != root) current.Dispose();
        }
    }

    private static bool IsSymlink(SafeFileHandle dir, string name)
    {
        using var link = DirFd.OpenAt(dir, name, PathOpen.OPath | PathOpen.ONoFollow, out _);
        return !link.IsInvalid && PathOpen.Status(link).Type == PathOpen.SIfLnk;
    }
}
