using System.Globalization;

namespace FireSharp.Daemon.Isolation;

/// <summary>
/// The cgroup file system under a root (<c>/sys/fs/cgroup</c>, or a fake tree in tests), seen through the
/// daemon's parent cgroup (<c>CgroupParent</c>, relative to the root). One directory per VM under the parent;
/// the per-version details (which directories, which files) are <see cref="CgroupV1"/>'s and <see cref="CgroupV2"/>'s.
/// Every failure to write is an <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/> naming the file.
/// </summary>
internal abstract class CgroupHierarchy(string root, string parent)
{
    public const string ProcsFile = "cgroup.procs";

    /// <summary>Where the cgroup file systems are mounted.</summary>
    public string Root { get; } = root;

    /// <summary>The daemon's parent cgroup, relative to the root (or to each controller's mount on v1).</summary>
    public string Parent { get; } = parent;

    public abstract CgroupVersion Version { get; }

    /// <summary>Which of memory, cpu, pids and io this hierarchy can limit (io is blkio on v1).</summary>
    public abstract IReadOnlySet<string> Controllers { get; }

    /// <summary>The directories of one cgroup: one per controller mount on v1, one on v2.</summary>
    public abstract IReadOnlyList<string> Directories(string name);

    /// <summary>The directory whose cgroup.procs lists the VM's processes (v1: the memory controller's).</summary>
    public string PrimaryDirectory(string name) => Directories(name)[0];

    /// <summary>Makes the parent cgroup (and on v2, enables the controllers for its children). Idempotent.</summary>
    public abstract void EnsureParent();

    /// <summary>Makes (or reuses) the VM's cgroup and writes its limits. Limits a controller cannot take are skipped.</summary>
    public abstract void Create(string name, CgroupLimits limits);

    /// <summary>Changes the CPU quota of cgroup <paramref name="name"/> (which exists) to <paramref name="quotaMicros"/> per period.</summary>
    public abstract void SetCpuQuota(string name, long quotaMicros);

    /// <summary>How many processes of cgroup <paramref name="name"/> the kernel's OOM killer has killed (0 when unknown).</summary>
    public abstract long OomKills(string name);

    /// <summary>The value of <paramref name="key"/> in a flat-keyed cgroup file (<c>key value</c> per line), or 0.</summary>
    protected static long ReadKeyed(string file, string key)
    {
        if (!File.Exists(file)) return 0;
        foreach (var line in File.ReadLines(file))
        {
            var parts = line.Split(' ', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[0] == key && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long v)) return v;
        }
        return 0;
    }

    /// <summary>Finds the hierarchy under <paramref name="root"/>: cgroup2 if the root is one, else the v1 controllers mounted under it; null when neither.</summary>
    public static CgroupHierarchy? Detect(string root, string parent)
    {
        if (File.Exists(Path.Combine(root, "cgroup.controllers"))) return new CgroupV2(root, parent);
        var v1 = new CgroupV1(root, parent);
        return v1.Controllers.Count > 0 ? v1 : null;
    }

    /// <summary>Moves a process (all its threads) into the VM's cgroup, in every controller.</summary>
    public void AddProcess(string name, int pid)
    {
        string text = pid.ToString(CultureInfo.InvariantCulture);
        foreach (var dir in Directories(name)) Write(dir, ProcsFile, text);
    }

    /// <summary>The processes in the VM's cgroup (empty when it does not exist).</summary>
    public IReadOnlyList<int> Processes(string name)
    {
        var pids = new List<int>();
        foreach (var dir in Directories(name))
        {
            string file = Path.Combine(dir, ProcsFile);
            if (!File.Exists(file)) continue;
            foreach (var line in File.ReadAllLines(file))
                if (int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && !pids.Contains(pid)) pids.Add(pid);
        }
        return pids;
    }

    public bool Exists(string name) => Directories(name).Any(Directory.Exists);

    /// <summary>Removes the VM's cgroup in every controller (it must hold no process); true when none is left.</summary>
    public bool TryRemove(string name, out string? error)
    {
        error = null;
        foreach (var dir in Directories(name))
        {
            if (!Directory.Exists(dir)) continue;
            try
            {
                RemoveDirectory(dir);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                error = $"{dir}: {e.Message}";
            }
        }
        return error is null;
    }

    /// <summary>The names of the cgroups under the parent (in any controller).</summary>
    public IReadOnlyCollection<string> Children()
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var dir in ParentDirectories())
            if (Directory.Exists(dir))
                foreach (var child in Directory.EnumerateDirectories(dir)) names.Add(Path.GetFileName(child));
        return names;
    }

    /// <summary>The parent cgroup's directories.</summary>
    protected abstract IEnumerable<string> ParentDirectories();

    /// <summary>Writes one value to one cgroup file (the kernel takes each write whole).</summary>
    protected static void Write(string dir, string file, string value) => File.WriteAllText(Path.Combine(dir, file), value);

    /// <summary>Writes a file that only some kernels offer (the I/O weight needs CFQ, BFQ or iocost; swap limits need swap accounting).</summary>
    protected static void WriteIfPresent(string dir, string file, string value)
    {
        if (File.Exists(Path.Combine(dir, file))) Write(dir, file, value);
    }

    /// <summary>
    /// rmdir: a real cgroup directory holds only the kernel's files and goes with one rmdir. A fake tree (tests)
    /// holds the files the daemon wrote, so those go first; a directory with subdirectories is never emptied.
    /// </summary>
    private static void RemoveDirectory(string dir)
    {
        try
        {
            Directory.Delete(dir);
        }
        catch (IOException) when (!IsCgroupFs(dir) && Directory.GetDirectories(dir).Length == 0)
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>True on cgroup or cgroup2 (their files cannot be deleted one by one).</summary>
    private static bool IsCgroupFs(string dir) =>
        File.Exists(Path.Combine(dir, "cgroup.clone_children")) || File.Exists(Path.Combine(dir, "cgroup.events"));
}
