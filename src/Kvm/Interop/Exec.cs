using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Replacing the process: execve(2), and the fd and namespace bookkeeping before it (close_range with
/// CLOSE_RANGE_CLOEXEC, clearing FD_CLOEXEC on the fds to pass on, setns(2)). execve is safe from .NET because
/// it replaces the whole process; it only returns on failure (then it throws <see cref="JailSetupException"/>).
/// </summary>
public static partial class Exec
{
    private const int F_GETFD = 1, F_SETFD = 2, FD_CLOEXEC = 1;
    private const uint CLOSE_RANGE_CLOEXEC = 1u << 2;
    public const int CLONE_NEWNET = 0x40000000;

    [LibraryImport("libc", EntryPoint = "execve", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int ExecveNative(string path, string?[] argv, string?[] envp);

    [LibraryImport("libc", EntryPoint = "close_range", SetLastError = true)]
    private static partial int CloseRangeNative(uint first, uint last, uint flags);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlNative(int fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNsNative(int fd, int nsType);

    /// <summary>NS_GET_NSTYPE, _IO(0xb7, 0x3): the CLONE_NEW* type of the namespace an nsfs fd stands for.</summary>
    private const nuint NS_GET_NSTYPE = 0xb703;

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlNoArg(SafeHandle fd, nuint request);

    /// <summary>Replaces the process with <paramref name="path"/>; never returns unless it fails.</summary>
    public static void Execve(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment)
    {
        var args = new string?[argv.Count + 1];
        for (int i = 0; i < argv.Count; i++) args[i] = argv[i];
        var env = new string?[environment.Count + 1];
        for (int i = 0; i < environment.Count; i++) env[i] = environment[i];
        JailSetupException.Check(ExecveNative(path, args, env), $"execve({path})");
    }

    /// <summary>Marks every fd from <paramref name="first"/> up close-on-exec, so an execve passes on only what <see cref="KeepAcrossExec"/> names afterwards.</summary>
    public static void CloseAllOnExec(int first) =>
        JailSetupException.Check(CloseRangeNative((uint)first, uint.MaxValue, CLOSE_RANGE_CLOEXEC), "close_range(CLOSE_RANGE_CLOEXEC)");

    /// <summary>Clears FD_CLOEXEC: the fd survives the next execve.</summary>
    public static void KeepAcrossExec(int fd)
    {
        int flags = FcntlNative(fd, F_GETFD, 0);
        JailSetupException.Check(flags, $"fcntl({fd}, F_GETFD)");
        JailSetupException.Check(FcntlNative(fd, F_SETFD, flags & ~FD_CLOEXEC), $"fcntl({fd}, F_SETFD)");
    }

    /// <summary>Moves the calling thread into the namespace of <paramref name="nsFd"/> (CLONE_NEWNET: allowed in a multi-threaded process).</summary>
    public static void EnterNamespace(int nsFd, int nsType, string what) =>
        JailSetupException.Check(SetNsNative(nsFd, nsType), $"setns({what})");

    private const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_NOCTTY = 0x100, O_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenNative(string path, int flags);

    /// <summary>
    /// The CLONE_NEW* type of the namespace file at <paramref name="path"/> (nsfs: /run/netns/NAME, /proc/PID/ns/net),
    /// or null and why not: it cannot be opened (errno), or it is no namespace (NS_GET_NSTYPE on the opened fd fails).
    /// Opened non-blocking, so a FIFO cannot hang the caller.
    /// </summary>
    public static int? NamespaceTypeAt(string path, out string? problem)
    {
        int fd = OpenNative(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
        {
            problem = $"cannot be opened: {Errno.Text(Errno.Last)}";
            return null;
        }
        using var file = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        int type = IoctlNoArg(file, NS_GET_NSTYPE);
        problem = type < 0 ? "is not a namespace file (nsfs)" : null;
        return type < 0 ? null : type;
    }
}
