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
}
