using System.Globalization;

namespace FireSharp.Daemon.Isolation;

/// <summary>
/// cgroup v2: the root is a cgroup2 mount and a VM's cgroup is one directory, <c>&lt;root&gt;/&lt;parent&gt;/&lt;vm&gt;</c>.
/// The controllers the root offers (of memory, cpu, pids, io) are enabled for the parent's children through
/// <c>cgroup.subtree_control</c> on every level down to the parent. Limits: <c>memory.max</c> and
/// <c>memory.swap.max</c> 0 (the guest's memory is never swapped out), <c>cpu.max</c>, <c>pids.max</c> and,
/// when configured, <c>io.weight</c>. A root without controllers (such as the hybrid layout's
/// <c>/sys/fs/cgroup/unified</c>) still groups the VM's processes; it limits nothing.
/// </summary>
internal sealed class CgroupV2 : CgroupHierarchy
{
    private static readonly string[] s_known = ["memory", "cpu", "pids", "io"];

    public CgroupV2(string root, string parent) : base(root, parent)
    {
        var offered = File.ReadAllText(Path.Combine(root, "cgroup.controllers")).Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        Controllers = s_known.Where(offered.Contains).ToHashSet(StringComparer.Ordinal);
    }

    public override CgroupVersion Version => CgroupVersion.V2;

    public override IReadOnlySet<string> Controllers { get; }

    public override IReadOnlyList<string> Directories(string name) => [Path.Combine(Root, Parent, name)];

    protected override IEnumerable<string> ParentDirectories() => [Path.Combine(Root, Parent)];

    public override void EnsureParent()
    {
        Directory.CreateDirectory(Path.Combine(Root, Parent));
        if (Controllers.Count == 0) return;
        // "No internal processes": controllers reach the VMs' cgroups only if every cgroup above them
        // delegates them, from the root down to the parent.
        string enable = string.Join(' ', Controllers.Select(c => "+" + c));
        string dir = Root;
        Write(dir, "cgroup.subtree_control", enable);
        foreach (var part in Parent.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            dir = Path.Combine(dir, part);
            Write(dir, "cgroup.subtree_control", enable);
        }
    }

    /// <summary>v2: the <c>oom_kill</c> line of <c>memory.events</c>.</summary>
    public override long OomKills(string name) => ReadKeyed(Path.Combine(Root, Parent, name, "memory.events"), "oom_kill");

    public override void SetCpuQuota(string name, long quotaMicros)
    {
        if (Controllers.Contains("cpu"))
            Write(Path.Combine(Root, Parent, name), "cpu.max", string.Create(CultureInfo.InvariantCulture, $"{quotaMicros} {CgroupLimits.CpuPeriodMicros}"));
    }

    public override void Create(string name, CgroupLimits limits)
    {
        EnsureParent();
        string dir = Path.Combine(Root, Parent, name);
        Directory.CreateDirectory(dir);
        if (Controllers.Contains("memory"))
        {
            Write(dir, "memory.max", limits.MemoryBytes.ToString(CultureInfo.InvariantCulture));
            WriteIfPresent(dir, "memory.swap.max", "0"); // absent without swap accounting
        }
        if (Controllers.Contains("cpu"))
            Write(dir, "cpu.max", string.Create(CultureInfo.InvariantCulture, $"{limits.CpuQuotaMicros} {CgroupLimits.CpuPeriodMicros}"));
        if (Controllers.Contains("pids")) Write(dir, "pids.max", limits.PidsMax.ToString(CultureInfo.InvariantCulture));
        if (Controllers.Contains("io") && limits.IoWeight is { } weight)
            WriteIfPresent(dir, "io.weight", "default " + Math.Clamp(weight, 1, 10000).ToString(CultureInfo.InvariantCulture));
    }
}
