using System.Globalization;

namespace FireSharp.Daemon.Isolation;

/// <summary>
/// cgroup v1 (the legacy and hybrid layouts): each controller is its own hierarchy, mounted at
/// <c>&lt;root&gt;/&lt;controller&gt;</c>, and a VM's cgroup is one directory in each:
/// <c>memory/&lt;parent&gt;/&lt;vm&gt;</c>, <c>cpu/...</c>, <c>pids/...</c>, <c>blkio/...</c>.
/// <list type="bullet">
///   <item>memory: <c>memory.limit_in_bytes</c>, and <c>memory.memsw.limit_in_bytes</c> at the same value where swap
///   accounting exists, so the guest's memory is never swapped out (otherwise <c>memory.swappiness</c> 0);</item>
///   <item>cpu: <c>cpu.cfs_period_us</c> and <c>cpu.cfs_quota_us</c>;</item>
///   <item>pids: <c>pids.max</c>;</item>
///   <item>blkio: <c>blkio.weight</c>, only when configured and the kernel's I/O scheduler offers it.</item>
/// </list>
/// cpuset is left alone: a v1 cpuset cgroup needs cpus and mems copied in before any task may join it.
/// </summary>
internal sealed class CgroupV1 : CgroupHierarchy
{
    /// <summary>The controllers used, by the name the daemon knows them, with their mount directory's name.</summary>
    private static readonly (string Controller, string Mount)[] s_known = [("memory", "memory"), ("cpu", "cpu"), ("pids", "pids"), ("io", "blkio")];

    private readonly List<(string Controller, string Mount)> _mounts = [];

    public CgroupV1(string root, string parent) : base(root, parent)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (controller, mount) in s_known)
        {
            string dir = Path.Combine(root, mount);
            if (!File.Exists(Path.Combine(dir, ProcsFile))) continue;
            // Co-mounted controllers (cpu,cpuacct behind a "cpu" link) share one directory: make it once.
            string real = Directory.ResolveLinkTarget(dir, returnFinalTarget: true)?.FullName ?? Path.GetFullPath(dir);
            if (seen.Add(real)) _mounts.Add((controller, mount));
        }
        Controllers = _mounts.Select(m => m.Controller).ToHashSet(StringComparer.Ordinal);
    }

    public override CgroupVersion Version => CgroupVersion.V1;

    public override IReadOnlySet<string> Controllers { get; }

    public override IReadOnlyList<string> Directories(string name) => [.. _mounts.Select(m => Path.Combine(Root, m.Mount, Parent, name))];

    protected override IEnumerable<string> ParentDirectories() => _mounts.Select(m => Path.Combine(Root, m.Mount, Parent));

    public override void EnsureParent()
    {
        foreach (var dir in ParentDirectories()) Directory.CreateDirectory(dir);
    }

    /// <summary>v1: the <c>oom_kill</c> line of the memory controller's <c>memory.oom_control</c> (Linux 4.13 and later).</summary>
    public override long OomKills(string name)
    {
        foreach (var (controller, mount) in _mounts)
            if (controller == "memory") return ReadKeyed(Path.Combine(Root, mount, Parent, name, "memory.oom_control"), "oom_kill");
        return 0;
    }

    public override void SetCpuQuota(string name, long quotaMicros)
    {
        foreach (var (controller, mount) in _mounts)
            if (controller == "cpu") Write(Path.Combine(Root, mount, Parent, name), "cpu.cfs_quota_us", quotaMicros.ToString(CultureInfo.InvariantCulture));
    }

    public override void Create(string name, CgroupLimits limits)
    {
        EnsureParent();
        foreach (var (controller, mount) in _mounts)
        {
            string dir = Path.Combine(Root, mount, Parent, name);
            Directory.CreateDirectory(dir);
            switch (controller)
            {
                case "memory": WriteMemory(dir, limits.MemoryBytes); break;
                case "cpu":
                    Write(dir, "cpu.cfs_period_us", CgroupLimits.CpuPeriodMicros.ToString(CultureInfo.InvariantCulture));
                    Write(dir, "cpu.cfs_quota_us", limits.CpuQuotaMicros.ToString(CultureInfo.InvariantCulture));
                    break;
                case "pids": Write(dir, "pids.max", limits.PidsMax.ToString(CultureInfo.InvariantCulture)); break;
                case "io" when limits.IoWeight is { } weight:
                    WriteIfPresent(dir, "blkio.weight", Math.Clamp(weight, 10, 1000).ToString(CultureInfo.InvariantCulture));
                    break;
            }
        }
    }

    private static void WriteMemory(string dir, long bytes)
    {
        string value = bytes.ToString(CultureInfo.InvariantCulture);
        if (File.Exists(Path.Combine(dir, "memory.memsw.limit_in_bytes")))
        {
            // memsw (memory + swap) may never be below the memory limit: lift it, set the limit, then cap it
            // there too, which works whether a reused cgroup's old limit was lower or higher.
            Write(dir, "memory.memsw.limit_in_bytes", "-1");
            Write(dir, "memory.limit_in_bytes", value);
            Write(dir, "memory.memsw.limit_in_bytes", value);
        }
        else
        {
            Write(dir, "memory.limit_in_bytes", value);
            Write(dir, "memory.swappiness", "0");
        }
    }
}
