using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>Facts about processes from /proc, and the few libc calls the daemon and the worker need.</summary>
public static partial class ProcInfo
{
    public const int SIGKILL = 9, SIGTERM = 15;

    /// <summary>
    /// The start time of a live process (field 22 of /proc/pid/stat), or null if there is no such process or
    /// it is a zombie (dead, waiting to be reaped: it holds nothing but its pid).
    /// </summary>
    public static ulong? StartTime(int pid)
    {
        string stat;
        try { stat = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
        int close = stat.LastIndexOf(')');
        if (close < 0) return null;
        var fields = stat[(close + 2)..].Split(' ');
        // fields[0] is field 3 (state); field 22 is fields[19].
        if (fields.Length < 20 || fields[0] is "Z" or "X") return null;
        return ulong.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out var t) ? t : null;
    }

    public static bool IsAlive(int pid) => StartTime(pid) is not null;

    /// <summary>
    /// The kernel's log ring buffer as text (syslog(2) SYSLOG_ACTION_READ_ALL: what dmesg shows), or null when it
    /// cannot be read (no CAP_SYSLOG with dmesg_restrict).
    /// </summary>
    public static string? ReadKernelLog()
    {
        const int ReadAll = 3, SizeBuffer = 10;
        int size = klogctl(SizeBuffer, [], 0);
        if (size <= 0) return null;
        var buffer = new byte[size];
        int n = klogctl(ReadAll, buffer, size);
        return n < 0 ? null : System.Text.Encoding.UTF8.GetString(buffer, 0, n);
    }

    [LibraryImport("libc", EntryPoint = "klogctl")]
    private static partial int klogctl(int type, Span<byte> buffer, int length);

    /// <summary>The host's total memory (MemTotal of /proc/meminfo) in bytes; 0 when it cannot be read.</summary>
    public static ulong HostMemoryBytes() => KibField("/proc/meminfo", "MemTotal:") ?? 0;

    /// <summary>A process's resident set (VmRSS of /proc/&lt;pid&gt;/status) in bytes; null when it is gone or unreadable.</summary>
    public static ulong? ResidentBytes(int pid) => KibField($"/proc/{pid}/status", "VmRSS:");

    /// <summary>The "Key:   123 kB" line of a /proc file, in bytes; null when the file or the line is missing.</summary>
    private static ulong? KibField(string path, string key)
    {
        try
        {
            foreach (var line in File.ReadLines(path))
            {
                if (!line.StartsWith(key, StringComparison.Ordinal)) continue;
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length >= 2 && ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong kib)
                    ? kib * 1024 : null;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    public static void SendSignal(int pid, int signal) => _ = kill(pid, signal);

    /// <summary>Makes the calling process the leader of a new session (no controlling terminal).</summary>
    public static void NewSession() => _ = setsid();

    /// <summary>
    /// A close-on-exec copy of stdout, to keep talking to the parent after <see cref="RedirectStdio"/> (the
    /// worker's ready line); null when there is no stdout.
    /// </summary>
    public static SafeFileHandle? DuplicateStdout()
    {
        const int F_DUPFD_CLOEXEC = 1030;
        int fd = fcntl(1, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>Writes one line to a pipe and closes it; a reader that went away is ignored.</summary>
    public static void WriteLineAndClose(SafeFileHandle pipe, string line)
    {
        try
        {
            using var stream = new FileStream(pipe, FileAccess.Write, bufferSize: 0);
            stream.Write(System.Text.Encoding.UTF8.GetBytes(line + "\n"));
        }
        catch (IOException) { }
    }

    /// <summary>
    /// Points the process's stdin at /dev/null and stdout/stderr at a log file, in O_APPEND mode: every write lands at
    /// the file's end, also after the daemon truncated it (its copy-and-truncate rotation of worker.log).
    /// </summary>
    public static void RedirectStdio(string logPath)
    {
        const int F_SETFL = 4, O_APPEND = 0x400;
        using var devNull = File.OpenHandle("/dev/null", FileMode.Open, FileAccess.Read);
        using var log = File.OpenHandle(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        int nullFd = (int)devNull.DangerousGetHandle(), logFd = (int)log.DangerousGetHandle();
        _ = fcntl(logFd, F_SETFL, O_APPEND); // shared by the dup2 copies: one open file description
        _ = dup2(nullFd, 0);
        _ = dup2(logFd, 1);
        _ = dup2(logFd, 2);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setsid();

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int dup2(int oldfd, int newfd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chown(string path, int owner, int group);

    /// <summary>Gives a file to a group (by name or number), keeping its owner.</summary>
    public static void ChangeGroup(string path, string group)
    {
        int gid = int.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : GroupId(group)
            ?? throw new ArgumentException($"no group named '{group}' in /etc/group");
        if (chown(path, -1, gid) != 0)
            throw Errno.LastIOError($"chown {path} to group {group}");
    }

    /// <summary>The process's effective user and group ids.</summary>
    public static uint EffectiveUserId => geteuid();

    public static uint EffectiveGroupId => getegid();

    /// <summary>A user id from a number or a name in /etc/passwd; null when there is no such user.</summary>
    public static int? UserId(string user) =>
        int.TryParse(user, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : IdByName("/etc/passwd", user);

    /// <summary>A group id from a number or a name in /etc/group; null when there is no such group.</summary>
    public static int? GroupIdOf(string group) =>
        int.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : GroupId(group);

    [LibraryImport("libc")]
    private static partial uint geteuid();

    [LibraryImport("libc")]
    private static partial uint getegid();

    private static int? GroupId(string name) => IdByName("/etc/group", name);

    /// <summary>The third field of the line whose first is <paramref name="name"/> in a passwd-style file.</summary>
    private static int? IdByName(string file, string name)
    {
        foreach (var line in File.ReadLines(file))
        {
            var parts = line.Split(':');
            if (parts.Length >= 3 && parts[0] == name && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                return id;
        }
        return null;
    }
}
