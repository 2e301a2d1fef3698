using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// Snapshots through the daemon: taken inside the VM's worker; restored into a new VM with a worker of its own.
/// A restore reads and checks the snapshot here first, so a bad one starts no worker.
/// </summary>
internal sealed class VmSnapshots(DaemonOptions options, VmRegistry registry, VmLifecycle lifecycle, WorkerSupervisor supervisor, GuestAgents agents, Jail.VmJails jails,
    HostPaths paths, DaemonSnapshotKeys daemonKeys)
{
    /// <summary>A snapshot key as the worker protocol carries it (over the worker's socket, never a command line).</summary>
    internal static Proto.Worker.SnapshotKey ToWire(FireSharp.Snapshot.SnapshotKey key) =>
        new() { Id = key.Id, Key = Google.Protobuf.ByteString.CopyFrom(key.Key) };

    /// <summary>Snapshots a RUNNING or PAUSED VM into a directory that must not exist.</summary>
    public async Task<VmSnapshotInfo> CreateAsync(SnapshotVmCommand command, CancellationToken ct)
    {
        SpecValidator.ValidateId(command.Id);
        ValidateAbsolute(command.Dir, "dir", required: true);
        // The target's parent, opened beneath an allowed root: the snapshot is put there through this fd, by name,
        // never by the path again (a parent swapped for a symlink meanwhile changes nothing).
        using var parent = paths.OpenParentForCreate(command.Dir, "dir", out string name);
        var entry = registry.Find(command.Id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            entry.ThrowIfDeleted();
            var session = entry.RequireSession("snapshot", VmPhase.Running, VmPhase.Paused);
            string target = Path.GetFullPath(command.Dir.TrimEnd('/') is { Length: > 0 } d ? d : command.Dir);
            // Every worker, jailed or not, writes into a staging directory the daemon chose (a jailed one can write
            // only into its outbox); the daemon then moves the snapshot into place through the fds above.
            var request = new TakeSnapshot
            {
                Dir = Path.Combine(jails.Outbox(entry), Guid.NewGuid().ToString("N")),
                RecordedDir = target,
                Resume = command.Resume,
                Diff = command.Diff,
                TrackDirty = command.TrackDirty,
            };
            var taken = await session.Client.SnapshotAsync(request, ct).ConfigureAwait(false);
            supervisor.Apply(entry, session, taken.Status);
            try
            {
                // request.Dir, not the worker's reply: the daemon moves only what it chose (the worker is not trusted).
                // Signed by the daemon through its fd of the directory it checked: the worker never holds a key, so a
                // compromised worker cannot forge a MAC (docs/security.md).
                SnapshotPlacement.Place(request.Dir, parent, name, target, daemonKeys.Current.Signing);
            }
            catch (Exception e) when (e is SnapshotException or IOException or UnauthorizedAccessException)
            {
                try { Directory.Delete(request.Dir, recursive: true); }
                catch (Exception e2) when (e2 is IOException or UnauthorizedAccessException) { }
                throw e is SnapshotException se ? SnapshotErrors.ToApi(se)
                    : VmApiException.Unavailable($"cannot move the snapshot from the VM's outbox to {target}: {e.Message}");
            }
            string written = target;
            return new VmSnapshotInfo
            {
                Dir = written,
                MemoryBytes = taken.MemoryBytes,
                MemoryBytesWritten = taken.MemoryBytesWritten,
                StateFileBytes = taken.StateFileBytes,
                DurationMs = taken.DurationMs,
                PausedMs = taken.PausedMs,
                BaseDir = taken.BaseDir.Length == 0 ? null : taken.BaseDir,
                DiffPages = taken.DiffPages,
                Vm = entry.Snapshot(),
            };
        }
        finally
        {
            entry.Op.Release();
        }
    }

    /// <summary>Restores a snapshot as a new VM in a new worker; any failure removes the worker, its files and the id.</summary>
    public async Task<VmInfo> RestoreAsync(RestoreVmCommand command, CancellationToken ct)
    {
        SpecValidator.ValidateId(command.Id, "id");
        if (command.Id.Length > options.MaxIdLength)
            throw VmApiException.Invalid("id", $"is {command.Id.Length} characters; this daemon's state directory allows at most {options.MaxIdLength}");
        SpecValidator.ValidateLabels(command.Labels, "labels");
        ValidateAbsolute(command.Dir, "dir", required: true);
        foreach (var (driveId, path) in command.DrivePaths)
        {
            SpecValidator.ValidateDeviceId(driveId, "overrides.drive_paths");
            ValidateAbsolute(path, $"overrides.drive_paths[{driveId}]", required: true);
        }
        ValidateAbsolute(command.VsockPath ?? "", "overrides.vsock_path", required: false);
        if (command.VsockPath is { Length: > 0 } vsockPath) paths.CheckSocket(vsockPath, "overrides.vsock_path");
        paths.Check(command.Dir, Kvm.Files.PathKind.Directory, "dir");
        SpecValidator.ValidateCpuQuota(command.CpuQuotaMillicpus, "overrides.cpu_quota_millicpus");

        LoadedSnapshot snapshot;
        try
        {
            // Authenticated first: a state file that is not signed with one of the daemon's keys is refused
            // before it is parsed, and before any path it names is looked at.
            // This is an early check, so a bad snapshot starts no worker; the one that counts is made again on the
            // files the worker reads: by its jailer (jailed) or by the worker itself (unjailed).
            // One verified read: inside the scope the reader takes the very handles the MAC was checked on (this
            // thread's, no await in between), so what is loaded here is exactly what was verified.
            using (SnapshotFiles.VerifiedScope(command.Dir, daemonKeys.Current))
            {
                snapshot = SnapshotReader.Load(command.Dir);
                SnapshotReader.CheckBases(snapshot); // a diff snapshot's base must be in place and unchanged
            }
        }
        catch (SnapshotException e)
        {
            throw SnapshotErrors.ToApi(e);
        }
        var config = snapshot.State.Config;
        foreach (var driveId in command.DrivePaths.Keys)
            if (!config.Devices.Any(d => d.Id == driveId && d.Kind == BlockDeviceKind.Name))
                throw VmApiException.Invalid($"overrides.drive_paths[{driveId}]", $"the snapshot has no drive '{driveId}'");
        bool hasVsock = config.Devices.Any(d => d.Kind == VsockDeviceKind.Name);
        if (command.VsockPath is not null && !hasVsock)
            throw VmApiException.Invalid("overrides.vsock_path", "the snapshot has no vsock device");

        var spec = SpecOf(config, command.DrivePaths) with { CpuQuotaMillicpus = command.CpuQuotaMillicpus };
        // The snapshot's host paths are hints: used only if they pass the policy, else an override is needed.
        paths.CheckSpec(spec, i => command.DrivePaths.ContainsKey(spec.Drives[i].Id)
            ? $"overrides.drive_paths[{spec.Drives[i].Id}]" : $"dir (the snapshot's drive '{spec.Drives[i].Id}'; give overrides.drive_paths[{spec.Drives[i].Id}])",
            withKernel: false);
        var restoredFrom = command with
        {
            Dir = snapshot.Directory,
            // Each restored VM gets its own vsock socket, where the daemon's Exec finds it (GuestAgents).
            VsockPath = command.VsockPath ?? (hasVsock ? agents.VsockPath(command.Id) : null),
        };
        var vm = new VmInfo { Id = command.Id, Labels = command.Labels, Spec = spec, Phase = VmPhase.Creating, CreatedAt = VmEntry.Now() };
        return await lifecycle.ProvisionAsync(registry.NewEntry(command.Id, vm, restoredFrom), $"restored from {snapshot.Directory}", start: false, ct).ConfigureAwait(false);
    }

    /// <summary>The spec of a restored VM: the snapshot's machine and devices (drives with the overrides' paths).</summary>
    private static VmConfig SpecOf(MachineConfig config, IReadOnlyDictionary<string, string> drivePaths)
    {
        VsockConfig? vsock = null;
        if (config.Devices.FirstOrDefault(d => d.Kind == VsockDeviceKind.Name) is { } device)
        {
            try
            {
                vsock = new VsockConfig(checked((uint)VsockDeviceKind.Instance.Parse(device).GuestCid));
            }
            catch (Exception e) when (e is DeviceRestoreException or OverflowException)
            {
                throw VmApiException.Invalid("dir", $"the snapshot's vsock device is corrupt: {e.Message}");
            }
        }
        var drives = new List<DriveConfig>();
        foreach (var d in config.Devices.Where(d => d.Kind == BlockDeviceKind.Name))
        {
            DriveConfig drive;
            try
            {
                var (saved, _) = BlockDeviceKind.Instance.Parse(d);
                drive = new DriveConfig(d.Id, saved.Path) { ReadOnly = saved.ReadOnly, Root = saved.IsRoot };
            }
            catch (DeviceRestoreException e)
            {
                throw VmApiException.Invalid("dir", $"the snapshot's drive list is corrupt: {e.Message}");
            }
            if (drivePaths.TryGetValue(d.Id, out var path)) drive = drive with { Path = path };
            drives.Add(drive);
        }
        // Its interfaces, as the snapshot records them (the worker reattaches those taps; a jailer opens them for it).
        var nics = new List<NicConfig>();
        foreach (var d in config.Devices.Where(d => d.Kind == NetDeviceKind.Name))
        {
            try
            {
                var saved = NetDeviceKind.Instance.Parse(d);
                nics.Add(new NicConfig(saved.Id) { Tap = saved.TapName, Mac = saved.Mac });
            }
            catch (DeviceRestoreException e)
            {
                throw VmApiException.Invalid("dir", $"the snapshot's network interface list is corrupt: {e.Message}");
            }
        }
        return new VmConfig
        {
            Kernel = new KernelConfig(config.KernelPath),
            Vcpus = config.VcpuCount,
            MemMib = (long)(config.MemoryBytes / (1024 * 1024)),
            Drives = drives,
            NetworkInterfaces = nics,
            Vsock = vsock,
            // A guest agent, if the snapshotted guest ran one, still listens on port 52: it is probed after the
            // restore (GuestAgents.ProbeRestoredAgent) and the VM is agent_ready once it answers.
            Agent = vsock is not null,
            Rng = config.Devices.Any(d => d.Kind == RngDeviceKind.Name),
        };
    }

    private static void ValidateAbsolute(string path, string field, bool required)
    {
        if (path.Length == 0)
        {
            if (required) throw VmApiException.Invalid(field, "is required");
            return;
        }
        if (!Path.IsPathFullyQualified(path)) throw VmApiException.Invalid(field, $"'{path}' is not an absolute path");
        if (path.Contains('\0')) throw VmApiException.Invalid(field, "contains a NUL character");
    }
}
