using FireSharp.Daemon.Isolation;

namespace FireSharp.Tests.Isolation;

/// <summary>
/// Real cgroups for tests: a parent cgroup of the test's own (so parallel daemons never reap each other's
/// VMs' cgroups), removed afterwards, and what /proc says about a process's cgroups.
/// </summary>
internal static class CgroupTestSupport
{
    public const string Root = "/sys/fs/cgroup";

    /// <summary>A parent cgroup name no other test uses.</summary>
    public static string UniqueParent() => "firesharp-test-" + Guid.NewGuid().ToString("N")[..10];

    /// <summary>The host's cgroup2 mount: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.</summary>
    public static string Cgroup2Root() =>
        File.Exists(Path.Combine(Root, "cgroup.controllers")) ? Root : Path.Combine(Root, "unified");

    /// <summary>The cgroup path (relative to its hierarchy's root) of <paramref name="pid"/> in the v1 hierarchy of <paramref name="controller"/>, or on v2 with controller "".</summary>
    public static string? CgroupOf(int pid, string controller)
    {
        foreach (var line in File.ReadAllLines($"/proc/{pid}/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length == 3 && (controller.Length == 0 ? parts[0] == "0" : parts[1].Split(',').Contains(controller))) return parts[2];
        }
        return null;
    }

    /// <summary>Removes a test's parent cgroup and whatever cgroups are left in it (best effort: they should be empty).</summary>
    public static void RemoveParent(string root, string parent)
    {
        var hierarchy = CgroupHierarchy.Detect(root, parent);
        if (hierarchy is null) return;
        foreach (var name in hierarchy.Children()) hierarchy.TryRemove(name, out _);
        foreach (var dir in hierarchy.Directories("x").Select(d => Path.GetDirectoryName(d)!))
        {
            try { if (Directory.Exists(dir)) Directory.Delete(dir); }
            catch (IOException) { }
        }
    }
}
