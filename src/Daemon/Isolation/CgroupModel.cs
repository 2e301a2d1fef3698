namespace FireSharp.Daemon.Isolation;

// The cgroup component's own types: its setting, its error, and the limits of one VM's cgroup.

/// <summary>Whether the daemon puts each VM's worker in a cgroup of its own (DaemonOptions.Cgroups).</summary>
public enum CgroupMode
{
    /// <summary>On when the daemon is root and the cgroup file system is writable; otherwise off, with a log line.</summary>
    Auto,
    /// <summary>The daemon does not start unless it can make per-VM cgroups with the memory, cpu and pids controllers.</summary>
    Required,
    /// <summary>No cgroups.</summary>
    Off,
}

/// <summary>Which cgroup hierarchy the daemon found at its <c>CgroupRoot</c>.</summary>
public enum CgroupVersion
{
    /// <summary>One controller per mount under the root (<c>/sys/fs/cgroup/memory</c>, ...): the legacy and hybrid layouts.</summary>
    V1,
    /// <summary>The unified hierarchy: the root itself is a cgroup2 mount.</summary>
    V2,
}

/// <summary>Why cgroups that the configuration requires cannot be used.</summary>
public enum CgroupFailure
{
    /// <summary>No cgroup hierarchy (neither cgroup2 nor v1 controllers) at <c>CgroupRoot</c>.</summary>
    NotMounted,
    /// <summary>The daemon cannot make its parent cgroup (not root, or a read-only or delegated hierarchy).</summary>
    NotWritable,
    /// <summary>The memory, cpu or pids controller is not available.</summary>
    ControllerMissing,
}

/// <summary>The daemon was configured with <c>Cgroups=Required</c> and cannot use them; it does not start.</summary>
public sealed class CgroupException(CgroupFailure failure, string message) : Exception(message)
{
    public CgroupFailure Failure { get; } = failure;
}

/// <summary>
/// The limits of one VM's cgroup. <see cref="CpuQuotaMicros"/> per <see cref="CpuPeriodMicros"/> is the CPU time
/// the whole worker (vCPU threads and device threads) may use; <see cref="IoWeight"/> is null for the kernel's default.
/// </summary>
public sealed record CgroupLimits(long MemoryBytes, long CpuQuotaMicros, int PidsMax)
{
    /// <summary>The CFS period: 100 ms, the kernel's default.</summary>
    public const long CpuPeriodMicros = 100_000;

    /// <summary>Relative I/O weight (v2 io.weight 1..10000, v1 blkio.weight 10..1000), or null to leave it.</summary>
    public int? IoWeight { get; init; }

    /// <summary>
    /// The limits for a VM with this spec: guest memory plus the VMM allowance; the spec's CPU quota, or by default
    /// one CPU per vCPU plus one for the VMM's own threads; vCPU threads plus the pids allowance.
    /// </summary>
    public static CgroupLimits For(Vms.VmConfig spec, DaemonOptions options) =>
        new((spec.MemMib + options.VmmMemoryAllowanceMib) * 1024L * 1024,
            MillicpusToQuota(spec.CpuQuotaMillicpus > 0 ? spec.CpuQuotaMillicpus : DefaultMillicpus(spec.Vcpus)),
            options.VmPidsAllowance + spec.Vcpus)
        { IoWeight = options.CgroupIoWeight };

    /// <summary>A VM without a CPU quota in its spec may use one CPU per vCPU and one more for its device threads.</summary>
    public static int DefaultMillicpus(int vcpus) => (vcpus + 1) * 1000;

    /// <summary>Microseconds of CPU per <see cref="CpuPeriodMicros"/> for a quota in thousandths of a CPU.</summary>
    public static long MillicpusToQuota(int millicpus) => millicpus * CpuPeriodMicros / 1000;
}
