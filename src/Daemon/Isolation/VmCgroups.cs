using FireSharp.Daemon.Vms;
using FireSharp.Kvm.Interop;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Isolation;

/// <summary>
/// Each VM's cgroup, <c>&lt;CgroupParent&gt;/&lt;vm id&gt;</c> under <c>CgroupRoot</c>, as the daemon uses it:
/// made with the VM's limits and given the worker right after the worker starts and before the daemon sends it
/// the request that builds the machine (so no guest code runs outside it); removed when the VM is deleted;
/// and, at start-up, reaped when no live VM of this daemon owns it. The name is the VM's id, so nothing needs
/// to be recorded: the parent is the daemon's, and every directory in it is one of its VMs' cgroups.
/// </summary>
internal sealed partial class VmCgroups(DaemonOptions options, ILogger logger)
{
    private static readonly TimeSpan RemoveRetry = TimeSpan.FromMilliseconds(20);
    private const int RemoveAttempts = 250; // 5 s: an exited worker leaves its cgroup once its last thread is gone

    /// <summary>The hierarchy in use; null while cgroups are off.</summary>
    public CgroupHierarchy? Hierarchy { get; private set; }

    public bool Enabled => Hierarchy is not null;

    /// <summary>
    /// Decides at start-up whether cgroups are used and logs the outcome. With <see cref="CgroupMode.Required"/>
    /// a hierarchy that cannot be used throws <see cref="CgroupException"/>; with Auto it turns them off.
    /// </summary>
    public void Initialize()
    {
        if (options.Cgroups == CgroupMode.Off)
        {
            LogOff(logger, "Cgroups=Off");
            return;
        }
        bool required = options.Cgroups == CgroupMode.Required;
        if (!required && !Environment.IsPrivilegedProcess)
        {
            LogOff(logger, "the daemon is not root (Cgroups=Required makes it try anyway, and fail if it cannot)");
            return;
        }
        var hierarchy = CgroupHierarchy.Detect(options.CgroupRoot, options.CgroupParent);
        if (hierarchy is null)
        {
            Fail(required, CgroupFailure.NotMounted, $"no cgroup2 mount or v1 memory, cpu or pids controller under {options.CgroupRoot} (CgroupRoot)");
            return;
        }
        try
        {
            hierarchy.EnsureParent();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Fail(required, CgroupFailure.NotWritable, $"cannot make the parent cgroup {options.CgroupParent} under {options.CgroupRoot}: {e.Message}");
            return;
        }
        string[] missing = [.. ((string[])["memory", "cpu", "pids"]).Where(c => !hierarchy.Controllers.Contains(c))];
        if (missing.Length > 0)
        {
            string what = $"the {string.Join(", ", missing)} controller(s) are not available under {options.CgroupRoot}";
            if (required) throw new CgroupException(CgroupFailure.ControllerMissing, $"Cgroups=Required: {what}");
            LogMissingControllers(logger, what);
        }
        Hierarchy = hierarchy;
        LogOn(logger, hierarchy.Version == CgroupVersion.V1 ? "v1" : "v2", options.CgroupRoot, options.CgroupParent, string.Join(", ", hierarchy.Controllers),
            options.VmmMemoryAllowanceMib, options.VmPidsAllowance);
    }

    private void Fail(bool required, CgroupFailure failure, string why)
    {
        if (required) throw new CgroupException(failure, $"Cgroups=Required: {why}");
        LogOff(logger, why);
    }

    /// <summary>
    /// Makes the VM's cgroup with the limits of <paramref name="spec"/> and moves the worker into it.
    /// <paramref name="pid"/> is the worker's own pid (a jail must hand over the process that runs the VM, not
    /// a launcher's). A failure is Unavailable: the caller abandons the launch.
    /// </summary>
    public void Enter(string vmId, VmConfig spec, int pid)
    {
        if (Hierarchy is not { } hierarchy) return;
        if (pid == Environment.ProcessId)
        {
            // A stand-in worker inside the daemon (tests): the daemon itself is never confined.
            LogInProcess(logger, vmId);
            return;
        }
        var limits = CgroupLimits.For(spec, options);
        try
        {
            hierarchy.Create(vmId, limits);
            hierarchy.AddProcess(vmId, pid);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw VmApiException.Unavailable($"cannot put the worker (pid {pid}) in its cgroup {hierarchy.PrimaryDirectory(vmId)}: {e.Message}");
        }
        LogEntered(logger, vmId, pid, hierarchy.PrimaryDirectory(vmId), limits.MemoryBytes >> 20, limits.CpuQuotaMicros, limits.PidsMax);
    }

    /// <summary>
    /// Sets the CPU quota of a running VM's cgroup to what <paramref name="spec"/> says (a function VM's share after
    /// its boot; see AgentFunctionVmFactory). Nothing to do while cgroups are off or for a worker inside the daemon.
    /// </summary>
    public void SetCpuQuota(string vmId, VmConfig spec)
    {
        if (Hierarchy is not { } hierarchy || !hierarchy.Exists(vmId)) return;
        var limits = CgroupLimits.For(spec, options);
        try
        {
            hierarchy.SetCpuQuota(vmId, limits.CpuQuotaMicros);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw VmApiException.Unavailable($"cannot set the CPU quota of {hierarchy.PrimaryDirectory(vmId)}: {e.Message}");
        }
        LogQuotaSet(logger, vmId, limits.CpuQuotaMicros);
    }

    [LoggerMessage(606, LogLevel.Debug, "VM {Id}: CPU quota now {QuotaMicros} us per 100 ms")]
    private static partial void LogQuotaSet(ILogger logger, string id, long quotaMicros);

    /// <summary>How many of the VM's processes its memory cgroup's OOM killer has killed (0 without cgroups or when unreadable).</summary>
    public long OomKills(string vmId)
    {
        if (Hierarchy is not { } hierarchy) return 0;
        try { return hierarchy.OomKills(vmId); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
    }

    /// <summary>Removes the VM's cgroup once its worker is gone (retrying while the kernel finishes the exit). Never throws.</summary>
    public async Task RemoveAsync(string vmId)
    {
        if (Hierarchy is not { } hierarchy || !hierarchy.Exists(vmId)) return;
        string? error = null;
        for (int attempt = 0; attempt < RemoveAttempts; attempt++)
        {
            if (hierarchy.TryRemove(vmId, out error)) return;
            await Task.Delay(RemoveRetry).ConfigureAwait(false);
        }
        LogRemoveFailed(logger, vmId, error ?? "");
    }

    /// <summary>
    /// At start-up, after the VMs were loaded (their dead or orphaned workers already killed): every cgroup under
    /// the parent that no VM with a live worker owns is removed. One that still holds processes is not this
    /// daemon's to judge (another daemon configured with the same parent?): it is logged and left alone.
    /// </summary>
    public async Task ReapAsync(Func<string, bool> isLive)
    {
        if (Hierarchy is not { } hierarchy) return;
        foreach (var name in hierarchy.Children())
        {
            if (isLive(name)) continue;
            // A killed worker's leader shows as a zombie in cgroup.procs until its last thread has exited: it is
            // no one's process any more, and the removal below retries until the kernel lets go of it.
            var pids = hierarchy.Processes(name).Where(ProcInfo.IsAlive).ToList();
            if (pids.Count > 0)
            {
                LogNotReaped(logger, hierarchy.PrimaryDirectory(name), string.Join(' ', pids));
                continue;
            }
            LogReaping(logger, hierarchy.PrimaryDirectory(name));
            await RemoveAsync(name).ConfigureAwait(false);
        }
    }

    [LoggerMessage(600, LogLevel.Warning, "cgroups off: {Why}; VM workers run without memory, CPU or pids limits")]
    private static partial void LogOff(ILogger logger, string why);

    [LoggerMessage(601, LogLevel.Information, "cgroups {Version} at {Root}, parent {Parent}: {Controllers}; each VM gets guest memory + {AllowanceMib} MiB, its CPU quota, and vCPUs + {Pids} pids")]
    private static partial void LogOn(ILogger logger, string version, string root, string parent, string controllers, long allowanceMib, int pids);

    [LoggerMessage(602, LogLevel.Warning, "cgroups: {What}; those limits are not enforced")]
    private static partial void LogMissingControllers(ILogger logger, string what);

    [LoggerMessage(603, LogLevel.Debug, "VM {Id}: worker {Pid} in {Cgroup} (memory {MemoryMib} MiB, CPU {QuotaMicros} us per 100 ms, pids {Pids})")]
    private static partial void LogEntered(ILogger logger, string id, int pid, string cgroup, long memoryMib, long quotaMicros, int pids);

    [LoggerMessage(604, LogLevel.Debug, "VM {Id}: its worker runs inside the daemon; no cgroup")]
    private static partial void LogInProcess(ILogger logger, string id);

    [LoggerMessage(605, LogLevel.Warning, "VM {Id}: its cgroup could not be removed: {Error}")]
    private static partial void LogRemoveFailed(ILogger logger, string id, string error);

    [LoggerMessage(606, LogLevel.Information, "removing the cgroup {Cgroup}: no VM with a live worker owns it")]
    private static partial void LogReaping(ILogger logger, string cgroup);

    [LoggerMessage(607, LogLevel.Warning, "the cgroup {Cgroup} belongs to no VM of this daemon but holds processes {Pids}; left alone (is another daemon using the same CgroupParent?)")]
    private static partial void LogNotReaped(ILogger logger, string cgroup, string pids);
}
