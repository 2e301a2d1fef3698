using System.Globalization;
using System.Text.RegularExpressions;
using FireSharp.Kvm.Interop;

namespace FireSharp.Daemon.Workers;

/// <summary>
/// How a worker process ended: a line for a human, the signal that killed it (0 if none or unknown) and, for a
/// death by the seccomp filter (SIGSYS), the refused syscall's number when the kernel log has it.
/// </summary>
public sealed record WorkerExit(string Reason, int Signal = 0, int? Syscall = null)
{
    public const int SIGSYS = 31;

    /// <summary>Killed by its seccomp filter: SECCOMP_RET_KILL_PROCESS ends a process as SIGSYS does.</summary>
    public bool KilledBySeccomp => Signal == SIGSYS;

    public override string ToString() => Reason;
}

/// <summary>
/// Finds what the seccomp filter refused from the kernel log: a kill is logged as an audit record
/// <c>audit: type=1326 ... pid=P ... sig=31 ... syscall=N ...</c> (seccomp's actions_logged includes kill_process by
/// default). The record is written by kauditd a little after the kill, so the lookup waits for it, boundedly.
/// </summary>
public static partial class SeccompKills
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(1);

    /// <summary>The exit of a worker killed by SIGSYS: the syscall (if logged) named in the reason.</summary>
    public static async Task<WorkerExit> DescribeAsync(int pid, Func<string?>? readLog = null)
    {
        readLog ??= ProcInfo.ReadKernelLog;
        int? nr = null;
        var deadline = DateTime.UtcNow + Wait;
        while (true)
        {
            nr = FindSyscall(readLog(), pid);
            if (nr is not null || DateTime.UtcNow >= deadline) break;
            await Task.Delay(50).ConfigureAwait(false);
        }
        string call = nr is { } n ? $"syscall {n}{(Seccomp.SyscallName(n) is { } name ? $" ({name})" : "")}" : "a syscall (the kernel log did not name it)";
        return new WorkerExit($"worker process {pid} was killed by its seccomp filter (SIGSYS) for {call}", WorkerExit.SIGSYS, nr);
    }

    /// <summary>The syscall number of the last seccomp kill of <paramref name="pid"/> in a kernel log text, or null.</summary>
    public static int? FindSyscall(string? log, int pid)
    {
        if (string.IsNullOrEmpty(log)) return null;
        int? found = null;
        foreach (Match m in AuditRecord().Matches(log))
        {
            if (m.Groups["pid"].Value != pid.ToString(CultureInfo.InvariantCulture) || m.Groups["sig"].Value != "31") continue;
            if (int.TryParse(m.Groups["nr"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out int nr)) found = nr;
        }
        return found;
    }

    [GeneratedRegex(@"type=1326\b[^\n]*?\bpid=(?<pid>\d+)\b[^\n]*?\bsig=(?<sig>\d+)\b[^\n]*?\bsyscall=(?<nr>\d+)\b")]
    private static partial Regex AuditRecord();
}
