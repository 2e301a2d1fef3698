using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>Snapshots through the daemon: taken inside the VM's worker; restored into a new VM with a worker of its own.</summary>
public sealed partial class VmManager
{
    /// <summary>Snapshots a RUNNING or PAUSED VM into <paramref name="dir"/> (see CreateSnapshot in vm.proto).</summary>
    public async Task<SnapshotInfo> CreateSnapshotAsync(CreateSnapshotRequest request, CancellationToken ct)
    {
        SpecValidator.ValidateId(request.Id);
        ValidateAbsolute(request.Dir, "dir", required: true);
        var entry = Find(request.Id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfDeleted(entry);
            var session = RequireSession(entry, "snapshot", VmState.Running, VmState.Paused);
            var taken = await session.Client.SnapshotAsync(new TakeSnapshot { Dir = request.Dir, Resume = request.Resume, Diff = request.Diff, TrackDirty = request.TrackDirty }, ct).ConfigureAwait(false);
            Apply(entry, session, taken.Status);
            return new SnapshotInfo
            {
                Dir = taken.Dir,
                MemoryBytes = taken.MemoryBytes,
                MemoryBytesWritten = taken.MemoryBytesWritten,
                StateFileBytes = taken.StateFileBytes,
                DurationMs = taken.DurationMs,
                PausedMs = taken.PausedMs,
                BaseDir = taken.BaseDir,
                DiffPages = taken.DiffPages,
                Vm = Snapshot(entry),
            };
        }
        finally
        {
            entry.Op.Release();
        }
    }

    /// <summary>
    /// Restores a snapshot as a new VM in a new worker (see RestoreVm in vm.proto). The snapshot is read and
    /// checked here first, so a bad one starts no worker; any later failure removes the worker, its files and the id.
    /// </summary>
    public async Task<Vm> RestoreAsync(RestoreVmRequest request, CancellationToken ct)
    {
        SpecValidator.ValidateId(request.Id, "id");
        if (request.Id.Length > _options.MaxIdLength)
            throw VmApiException.Invalid("id", $"is {request.Id.Length} characters; this daemon's state directory allows at most {_options.MaxIdLength}");
        SpecValidator.ValidateLabels(request.Labels, "labels");
        ValidateAbsolute(request.Dir, "dir", required: true);
        var overrides = request.Overrides ?? new Proto.V1.RestoreOverrides();
        foreach (var (driveId, path) in overrides.DrivePaths)
        {
            SpecValidator.ValidateDeviceId(driveId, "overrides.drive_paths");
            ValidateAbsolute(path, $"overrides.drive_paths[{driveId}]", required: true);
        }
        ValidateAbsolute(overrides.VsockPath, "overrides.vsock_path", required: false);

        LoadedSnapshot snapshot;
        try
        {
            snapshot = SnapshotReader.Load(request.Dir);
            SnapshotReader.CheckBases(snapshot); // a diff snapshot's base must be in place and unchanged
        }
        catch (SnapshotException e)
        {
            throw SnapshotErrors.ToApi(e);
        }
        var config = snapshot.State.Config;
        foreach (var driveId in overrides.DrivePaths.Keys)
            if (!config.Devices.Any(d => d.Id == driveId && d.Kind == BlockDeviceKind.Name))
                throw VmApiException.Invalid($"overrides.drive_paths[{driveId}]", $"the snapshot has no drive '{driveId}'");
        if (overrides.VsockPath.Length > 0 && !config.Devices.Any(d => d.Kind == VsockDeviceKind.Name))
            throw VmApiException.Invalid("overrides.vsock_path", "the snapshot has no vsock device");

        string id = request.Id;
        var spec = SpecOf(config, overrides);
        var entry = new VmEntry(id, _options.VmDir(id))
        {
            Announced = false,
            Record = new VmRecord
            {
                Vm = new Vm { Id = id, Labels = { request.Labels }, Spec = spec, State = VmState.Creating, CreatedAt = Now() },
                RestoredFrom = request.Clone(),
            },
        };
        entry.Record.RestoredFrom.Dir = snapshot.Directory;
        // Each restored VM gets its own vsock socket, where the daemon's Exec finds it (VmManager.Agent.cs).
        if (overrides.VsockPath.Length == 0 && config.Devices.Any(d => d.Kind == VsockDeviceKind.Name))
            (entry.Record.RestoredFrom.Overrides ??= new Proto.V1.RestoreOverrides()).VsockPath = VsockPath(id);
        lock (_admission)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_vms.ContainsKey(id)) throw new VmApiException(VmErrorKind.AlreadyExists, "id", $"a VM with id '{id}' exists");
            if (_vms.Count >= _options.MaxVms)
                throw VmApiException.Exhausted(null, $"this daemon allows at most {_options.MaxVms} VMs (MaxVms) and has {_vms.Count}");
            CheckMemoryBudget(spec.Machine.MemMib, except: null);
            _vms[id] = entry;
        }

        await entry.Op.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            try
            {
                if (Directory.Exists(entry.Dir)) Directory.Delete(entry.Dir, recursive: true);
                Directory.CreateDirectory(entry.Dir);
                lock (entry.Gate) Persist(entry);
                await LaunchAndCreateAsync(entry, ct).ConfigureAwait(false);
                lock (entry.Gate)
                {
                    entry.Announced = true;
                    Events.Publish(Event(EventType.Created, entry, $"restored from {snapshot.Directory}"));
                }
            }
            catch
            {
                await AbandonAsync(id, entry).ConfigureAwait(false);
                throw;
            }
            Log.Created(_logger, id, spec.Machine.MemMib, spec.Machine.Vcpus);
            return Snapshot(entry);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    /// <summary>The worker request that restores a VM made by RestoreVm; a restart (StartVm after it ended) always runs it.</summary>
    private static RestoreMachine RestoreMachineFor(string id, RestoreVmRequest request, bool restart)
    {
        var machine = new RestoreMachine
        {
            Id = id,
            Dir = request.Dir,
            VsockPath = request.Overrides?.VsockPath ?? "",
            Paused = request.Paused && !restart,
        };
        if (request.Overrides is { } o) machine.DrivePaths.Add(o.DrivePaths);
        return machine;
    }

    /// <summary>The API spec of a restored VM: the snapshot's machine and devices (drives with the overrides' paths).</summary>
    private static VmSpec SpecOf(MachineConfig config, Proto.V1.RestoreOverrides overrides)
    {
        var spec = new VmSpec
        {
            Kernel = new KernelSpec { Path = config.KernelPath },
            Machine = new MachineSpec { Vcpus = config.VcpuCount, MemMib = (long)(config.MemoryBytes / (1024 * 1024)) },
        };
        if (config.Devices.FirstOrDefault(d => d.Kind == VsockDeviceKind.Name) is { } vsock)
        {
            try
            {
                spec.Vsock = new VsockSpec { GuestCid = checked((uint)VsockDeviceKind.Instance.Parse(vsock).GuestCid) };
            }
            catch (Exception e) when (e is DeviceRestoreException or OverflowException)
            {
                throw VmApiException.Invalid("dir", $"the snapshot's vsock device is corrupt: {e.Message}");
            }
            // A guest agent, if the snapshotted guest ran one, still listens on port 52: it is probed after the
            // restore (ProbeRestoredAgent) and the VM is agent_ready once it answers.
            spec.Agent = true;
        }
        spec.Rng = config.Devices.Any(d => d.Kind == RngDeviceKind.Name);
        foreach (var d in config.Devices.Where(d => d.Kind == BlockDeviceKind.Name))
        {
            Proto.V1.DriveSpec drive;
            try
            {
                var (saved, _) = BlockDeviceKind.Instance.Parse(d);
                drive = new Proto.V1.DriveSpec { Id = d.Id, Path = saved.Path, ReadOnly = saved.ReadOnly, Root = saved.IsRoot };
            }
            catch (DeviceRestoreException e)
            {
                throw VmApiException.Invalid("dir", $"the snapshot's drive list is corrupt: {e.Message}");
            }
            if (overrides.DrivePaths.TryGetValue(d.Id, out var path)) drive.Path = path;
            spec.Drives.Add(drive);
        }
        return spec;
    }

    /// <summary>
    /// The VM's hybrid vsock socket: a restored VM's override (RestoreVm's, or the daemon's default
    /// <see cref="VsockPath"/> that RestoreAsync records), else <see cref="VsockPath"/>.
    /// </summary>
    private string AgentVsockPath(VmEntry entry)
    {
        lock (entry.Gate)
            return entry.Record.RestoredFrom?.Overrides?.VsockPath is { Length: > 0 } path ? path : VsockPath(entry.Id);
    }

    /// <summary>Before a restore into a new worker: a socket file left by an earlier worker of this VM at the daemon's own path goes.</summary>
    private void PrepareRestoredVsock(VmEntry entry)
    {
        string uds = AgentVsockPath(entry);
        if (uds == VsockPath(entry.Id)) TryDelete(uds);
    }

    /// <summary>How long a restored VM's agent is probed for before the daemon gives up (it stays not agent_ready).</summary>
    private static readonly TimeSpan RestoredAgentProbeTime = TimeSpan.FromMinutes(2);

    /// <summary>
    /// After a restore: the snapshotted guest's agent reported ready long ago and will not again; it keeps
    /// listening on port 52, and the transport reset dropped only connections. Connect (Hello) until it
    /// answers, then mark the VM agent_ready, as the ready report does for a booted VM.
    /// </summary>
    private void ProbeRestoredAgent(VmEntry entry, WorkerSession session)
    {
        lock (entry.Gate)
            if (entry.Record.Vm.Spec.Vsock is null || !entry.Record.Vm.Spec.Agent) return;
        string uds = AgentVsockPath(entry);
        _ = Task.Run(async () =>
        {
            // Only time spent RUNNING counts: a VM restored paused is probed once it is resumed.
            var probing = TimeSpan.Zero;
            var delay = TimeSpan.FromMilliseconds(20);
            while (probing < RestoredAgentProbeTime && !session.Cts.IsCancellationRequested)
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                bool running;
                lock (entry.Gate) running = entry.Record.Vm.State == VmState.Running;
                try
                {
                    if (running)
                    {
                        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(session.Cts.Token);
                        attempt.CancelAfter(TimeSpan.FromSeconds(10));
                        await using var client = await Agent.AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: attempt.Token).ConfigureAwait(false);
                        await ReseedAsync(entry.Id, client, attempt.Token).ConfigureAwait(false);
                        lock (entry.Gate)
                        {
                            if (entry.Session != session || entry.Deleted) return;
                            entry.Record.Vm.AgentReady = true;
                            Persist(entry);
                            Events.Publish(Event(EventType.AgentReady, entry, $"guest agent {client.Agent?.Version} answers after the restore"));
                        }
                        return;
                    }
                }
                catch (Exception e) when (e is Agent.AgentException or OperationCanceledException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
                {
                    if (session.Cts.IsCancellationRequested) return;
                }
                try
                {
                    await Task.Delay(delay, session.Cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { return; }
                if (running) probing += System.Diagnostics.Stopwatch.GetElapsedTime(started);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            }
        });
    }

    /// <summary>
    /// Clones of one snapshot share the guest kernel's RNG state: give this one fresh entropy from the host
    /// (the agent adds it and reseeds the CRNG). An agent without the request is logged and left as it is.
    /// </summary>
    private async Task ReseedAsync(string id, Agent.AgentClient client, CancellationToken ct)
    {
        try
        {
            bool reseeded = await client.ReseedAsync(cancellationToken: ct).ConfigureAwait(false);
            if (!reseeded) _logger.LogWarning("VM {Id}: the guest took fresh entropy but could not reseed its CRNG", id);
        }
        catch (Agent.AgentException e) when (e.Failure == Agent.AgentFailure.Remote)
        {
            _logger.LogWarning("VM {Id}: the guest agent did not take fresh entropy after the restore ({Error}); its RNG state is the snapshot's", id, e.Message);
        }
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
