using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Jail;

/// <summary>
/// The daemon's side of the jail (docs/isolation.md): each VM's uid/gid (kept in its record for the VM's life),
/// its plan (what is bind-mounted read-only, which drives and taps are handed over as open fds, its network
/// namespace, its rlimits), its run
/// directory (the sockets, owned by the VM's uid) and its jail directory (root/, outbox/, plan.pb), moving
/// snapshots out of a jailed worker's outbox, and removing what VMs leave behind.
/// </summary>
internal sealed class VmJails(DaemonOptions options, VmRegistry registry, DaemonSnapshotKeys snapshotKeys, ILogger logger)
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private readonly Lock _ids = new();

    /// <summary>How to launch the VM's worker: jailed (with a plan) when the daemon jails, else as it is.</summary>
    public WorkerLaunch LaunchFor(VmEntry entry)
    {
        string run = options.RunDir(entry.Id);
        var launch = new WorkerLaunch(entry.Id, options.WorkerSocket(entry.Id), WorkerLogs.WorkerLogPath(entry));
        var spec = entry.Snapshot().Spec;
        if (!options.JailEnabled)
        {
            if (spec.NetnsPath is not null)
                throw VmApiException.Unimplemented("spec.netns_path", "this daemon does not jail its VMs (Jail=false): only a jailed VM joins a network namespace");
            CreateOwnedDirectory(run, null);
            return launch;
        }
        if (entry.RestoredFrom?.VsockPath is { Length: > 0 } vsock && Path.GetDirectoryName(vsock) != run)
            throw VmApiException.Invalid("overrides.vsock_path", $"this daemon jails its VMs: a restored VM's vsock socket lives in its run directory {run}");
        var id = Identity(entry);
        string jail = options.JailDir(entry.Id);
        CreateOwnedDirectory(options.JailsDir, null);
        CreateOwnedDirectory(jail, null);
        CreateOwnedDirectory(run, id);
        string outbox = Outbox(entry.Id);
        CreateOwnedDirectory(outbox, id);
        var plan = new JailPlan
        {
            Uid = id.Uid,
            Gid = id.Gid,
            Root = Path.Combine(jail, "root"),
            FileSizeLimit = FileSizeLimit(spec),
            OpenFilesLimit = options.JailOpenFilesLimit,
            UnsharePath = options.JailUnshare,
            NetnsPath = spec.NetnsPath ?? "",
            AllowBlockDevices = options.AllowBlockDevices,
        };
        plan.AllowedPathRoots.AddRange(options.PathRoots);
        if (entry.RestoredFrom is null) // a restore loads no kernel: the snapshot's path (a hint) is not mounted
        {
            plan.Mounts.Add(new JailMount { Path = spec.Kernel.Path, ByFd = true });
            if (spec.Kernel.InitrdPath is { Length: > 0 } initrd) plan.Mounts.Add(new JailMount { Path = initrd, ByFd = true });
        }
        if (entry.RestoredFrom is { } restore)
        {
            // Stage 1 opens and verifies the chain's files with these keys and hands them over as fds; the worker
            // gets no key (docs/security.md). The directories are still mounted (0700, the daemon's): the worker
            // sees that they exist, and can read nothing in them.
            plan.SnapshotDir = restore.Dir;
            plan.SnapshotKeys.AddRange(snapshotKeys.Current.All.Select(VmSnapshots.ToWire));
            foreach (var dir in SnapshotChain(restore.Dir)) plan.Mounts.Add(new JailMount { Path = dir, Directory = true });
        }
        plan.Mounts.Add(new JailMount { Path = run, Writable = true, Directory = true });
        plan.Mounts.Add(new JailMount { Path = outbox, Writable = true, Directory = true });
        foreach (var d in spec.Drives) plan.Files.Add(new JailFile { Path = d.Path, ReadOnly = d.ReadOnly });
        // The jailer attaches the taps (in NetnsPath, else the daemon's namespace) before the worker gets its own.
        foreach (var n in spec.NetworkInterfaces) plan.Taps.Add(new JailTap { Name = n.Tap ?? "" });
        return launch with { Jail = plan, JailPlanPath = Path.Combine(jail, "plan.pb") };
    }

    /// <summary>The VM's uid/gid: the one its record keeps, or a free one now (kept until the VM is deleted).</summary>
    public JailIdentity Identity(VmEntry entry)
    {
        lock (_ids)
        {
            lock (entry.Gate)
                if (entry.Jail is { } kept) return kept;
            var taken = new HashSet<uint>();
            foreach (var e in registry.Entries)
                lock (e.Gate)
                    if (e.Jail is { } j) taken.Add(j.Uid);
            var id = JailIds.Allocate(options, taken)
                ?? throw VmApiException.Exhausted(null, $"all {options.JailUidCount} jail uids from {options.JailUidBase} are taken (JailUidBase, JailUidCount)");
            lock (entry.Gate) entry.Jail = id;
            return id;
        }
    }

    /// <summary>Where a jailed worker writes its snapshots (the daemon then moves them to where they were asked for).</summary>
    public string Outbox(string id) => Path.Combine(options.JailDir(id), "outbox");

    /// <summary>
    /// Where the VM's worker writes a snapshot before the daemon moves it into place (<see cref="SnapshotPlacement"/>):
    /// a jailed worker's outbox; an unjailed worker's is in the VM's own state directory (0700, the daemon's).
    /// </summary>
    public string Outbox(VmEntry entry)
    {
        bool jailed;
        lock (entry.Gate) jailed = entry.Worker is { Jailed: true };
        if (jailed) return Outbox(entry.Id);
        string outbox = Path.Combine(entry.Dir, "outbox");
        CreateOwnedDirectory(outbox, null);
        return outbox;
    }

    /// <summary>A snapshot directory and the bases of its diff chain (what a restore reads).</summary>
    public static List<string> SnapshotChain(string dir)
    {
        var chain = new List<string>();
        string? current = Path.GetFullPath(dir);
        while (current is not null && chain.Count <= DiffRestoreLimit && !chain.Contains(current))
        {
            chain.Add(current);
            try { current = DiffInfo.TryLoad(current)?.BaseDirectory; }
            catch (SnapshotException) { current = null; } // the worker reports it
        }
        return chain;
    }

    private const int DiffRestoreLimit = 64;

    /// <summary>Removes a deleted VM's jail and run directories.</summary>
    public void Remove(string id)
    {
        SafeDelete(options.JailDir(id));
        SafeDelete(options.RunDir(id));
    }

    /// <summary>At start-up: removes the jail and run directories of VMs that no longer exist.</summary>
    public void ReapOrphans(IReadOnlySet<string> live)
    {
        foreach (var parent in new[] { options.JailsDir, options.RunsDir })
        {
            if (!Directory.Exists(parent)) continue;
            foreach (var dir in Directory.GetDirectories(parent))
            {
                if (live.Contains(Path.GetFileName(dir))) continue;
                VmLog.JailReaped(logger, dir);
                SafeDelete(dir);
            }
        }
    }

    /// <summary>
    /// Deletes a directory tree, unless something is mounted under it in the daemon's mount namespace (a jail's
    /// mounts live only in its worker's namespace; one here would make a recursive delete reach the host's files).
    /// </summary>
    internal void SafeDelete(string dir)
    {
        if (!Directory.Exists(dir)) return;
        if (MountedUnder(dir) is { } mount)
        {
            VmLog.JailNotRemoved(logger, dir, $"{mount} is mounted under it");
            return;
        }
        try { Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { VmLog.JailNotRemoved(logger, dir, e.Message); }
    }

    /// <summary>A mount point at or under <paramref name="dir"/> in this process's mount namespace, or null.</summary>
    internal static string? MountedUnder(string dir)
    {
        string prefix = Path.GetFullPath(dir).TrimEnd('/') + "/";
        try
        {
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var fields = line.Split(' ');
                if (fields.Length < 5) continue;
                string point = fields[4].Replace("\\040", " ", StringComparison.Ordinal);
                if ((point + "/").StartsWith(prefix, StringComparison.Ordinal)) return point;
            }
        }
        catch (IOException) { }
        return null;
    }

    /// <summary>RLIMIT_FSIZE: the configured one, or what the VM may need to write (a snapshot's memory file, its largest drive).</summary>
    private ulong FileSizeLimit(VmConfig spec)
    {
        if (options.JailFileSizeLimitBytes > 0) return options.JailFileSizeLimitBytes;
        ulong limit = (ulong)spec.MemMib * 1024 * 1024 + 64UL * 1024 * 1024;
        foreach (var d in spec.Drives)
        {
            try { limit = Math.Max(limit, (ulong)new FileInfo(d.Path).Length); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return limit;
    }

    private static void CreateOwnedDirectory(string dir, JailIdentity? owner)
    {
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(dir);
        else Directory.CreateDirectory(dir, OwnerOnly);
        if (owner is not null) Mounts.ChangeOwner(dir, owner.Uid, owner.Gid);
    }
}
