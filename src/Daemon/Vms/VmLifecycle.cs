using FireSharp.Daemon.Isolation;
using FireSharp.Proto.Worker;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// A VM's life through the daemon: create (and restore, via <see cref="ProvisionAsync"/>), start, restart,
/// pause, resume, stop and delete. Each call holds the VM's op lock; the state itself comes from the worker
/// (<see cref="WorkerSupervisor.Apply"/>). Every failure leaves as a <see cref="VmApiException"/>.
/// </summary>
internal sealed class VmLifecycle(DaemonOptions options, HostLimits host, VmRegistry registry, VmAdmission admission,
    WorkerSupervisor supervisor, VmCgroups cgroups, GuestAgents agents, Jail.VmJails jails, EventHub events, HostPaths paths, DriveLocks locks, ILogger logger)
{
    public async Task<VmInfo> CreateAsync(CreateVmCommand command, CancellationToken ct)
    {
        SpecValidator.ValidateCreate(command, host, options.MaxIdLength);
        paths.CheckSpec(command.Spec, i => $"spec.drives[{i}].path");
        var vm = new VmInfo { Id = command.Id, Labels = command.Labels, Spec = command.Spec, Phase = VmPhase.Creating, CreatedAt = VmEntry.Now() };
        return await ProvisionAsync(registry.NewEntry(command.Id, vm), "created", command.Start, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Admits a new VM (CreateVm's or RestoreVm's), writes its record, launches its worker and builds the machine,
    /// then announces it (and starts it, with <paramref name="start"/>). A failure leaves nothing: the worker,
    /// its files and the id all go.
    /// </summary>
    public async Task<VmInfo> ProvisionAsync(VmEntry entry, string createdMessage, bool start, CancellationToken ct)
    {
        admission.Admit(entry);
        await entry.Op.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            try
            {
                var drives = entry.Snapshot().Spec;
                locks.Acquire(entry.Id, drives, i => entry.RestoredFrom?.DrivePaths.ContainsKey(drives.Drives[i].Id) == true
                    ? $"overrides.drive_paths[{drives.Drives[i].Id}]" : $"spec.drives[{i}].path");
                if (Directory.Exists(entry.Dir)) Directory.Delete(entry.Dir, recursive: true); // leftover of a crashed create
                Directory.CreateDirectory(entry.Dir);
                registry.Save(entry);
                await supervisor.LaunchAsync(entry, restart: false, ct).ConfigureAwait(false);
                lock (entry.Gate)
                {
                    entry.Announced = true;
                    events.Publish(entry.Event(VmEventKind.Created, createdMessage));
                }
                if (start) await StartCoreAsync(entry, ct).ConfigureAwait(false);
            }
            catch
            {
                await AbandonAsync(entry).ConfigureAwait(false);
                throw;
            }
            var spec = entry.Snapshot().Spec;
            VmLog.Created(logger, entry.Id, spec.MemMib, spec.Vcpus);
            return entry.Snapshot();
        }
        finally
        {
            entry.Op.Release();
        }
    }

    public Task<VmInfo> StartAsync(string id, CancellationToken ct) =>
        UnderOpAsync(id, entry => StartCoreAsync(entry, ct), ct);

    private async Task StartCoreAsync(VmEntry entry, CancellationToken ct)
    {
        WorkerSession? session;
        VmPhase phase;
        lock (entry.Gate) (session, phase) = (entry.Session, entry.Vm.Phase);
        switch (phase)
        {
            case VmPhase.Created when session is not null:
                await supervisor.CallAsync(entry, session, new WorkerRequest { Start = new Empty() }, ct).ConfigureAwait(false);
                return;
            case VmPhase.Stopped or VmPhase.Failed:
                await RestartAsync(entry, ct).ConfigureAwait(false);
                return;
            default:
                throw entry.WrongState("start", phase == VmPhase.Paused ? " (use ResumeVm)" : "");
        }
    }

    /// <summary>Starts an ended VM again from its spec (or its snapshot) in a fresh worker.</summary>
    private async Task RestartAsync(VmEntry entry, CancellationToken ct)
    {
        await supervisor.RetireAsync(entry).ConfigureAwait(false); // the old worker only kept the console history
        admission.Readmit(entry, () =>
        {
            lock (entry.Gate)
                entry.Vm = entry.Vm with { Phase = VmPhase.Creating, End = null, BootTimeMs = 0, StartedAt = null, AgentReady = false };
        });
        registry.Save(entry);
        lock (entry.Gate) events.Publish(entry.Event(VmEventKind.StateChanged, "restarting in a new worker"));
        try
        {
            await supervisor.LaunchAsync(entry, restart: true, ct).ConfigureAwait(false);
            if (entry.Snapshot().Phase == VmPhase.Created) await StartCoreAsync(entry, ct).ConfigureAwait(false); // a restored VM runs already
        }
        catch (Exception e)
        {
            await supervisor.RetireAsync(entry).ConfigureAwait(false);
            lock (entry.Gate)
            {
                entry.Vm = entry.Vm with { Phase = VmPhase.Failed, End = VmEntry.End(VmEndKind.VmmError, $"restart failed: {e.Message}", clean: false) };
                events.Publish(entry.Event(VmEventKind.Exited, entry.Vm.End!.Reason));
            }
            registry.Save(entry);
            throw;
        }
    }

    public Task<VmInfo> PauseAsync(string id, CancellationToken ct) =>
        SimpleCallAsync(id, "pause", VmPhase.Running, new WorkerRequest { Pause = new Empty() }, ct);

    public Task<VmInfo> ResumeAsync(string id, CancellationToken ct) =>
        SimpleCallAsync(id, "resume", VmPhase.Paused, new WorkerRequest { Resume = new Empty() }, ct);

    private Task<VmInfo> SimpleCallAsync(string id, string verb, VmPhase required, WorkerRequest request, CancellationToken ct) =>
        UnderOpAsync(id, entry => supervisor.CallAsync(entry, entry.RequireSession(verb, required), request, ct), ct);

    /// <summary>
    /// Replaces rate limiters on the VM's live worker (all or none: the worker checks every change first), then
    /// records them in the VM's spec.
    /// </summary>
    public async Task<VmInfo> UpdateRateLimitersAsync(UpdateRateLimitersCommand command, CancellationToken ct)
    {
        SpecValidator.ValidateUpdate(command);
        var request = new WorkerRequest { UpdateRateLimiters = RateLimiterUpdates.ToWire(command) };
        return await UnderOpAsync(command.Id, async entry =>
        {
            var session = entry.RequireSession("update the rate limiters of", VmPhase.Created, VmPhase.Running, VmPhase.Paused);
            await supervisor.CallAsync(entry, session, request, ct).ConfigureAwait(false);
            lock (entry.Gate) entry.Vm = entry.Vm with { Spec = RateLimiterUpdates.Apply(entry.Vm.Spec, command.Changes) };
            registry.Save(entry);
            VmLog.RateLimitersUpdated(logger, command.Id, command.Changes.Count);
        }, ct).ConfigureAwait(false);
    }

    /// <summary>Changes a live VM's CPU quota (its cgroup's) and records it in its spec; 0 means the default.</summary>
    public async Task<VmInfo> SetCpuQuotaAsync(string id, int millicpus, CancellationToken ct)
    {
        SpecValidator.ValidateCpuQuota(millicpus, "cpu_quota_millicpus");
        return await UnderOpAsync(id, entry =>
        {
            entry.RequireSession("set the CPU quota of", VmPhase.Created, VmPhase.Running, VmPhase.Paused);
            VmConfig spec;
            lock (entry.Gate) spec = entry.Vm.Spec with { CpuQuotaMillicpus = millicpus };
            cgroups.SetCpuQuota(id, spec);
            lock (entry.Gate) entry.Vm = entry.Vm with { Spec = spec };
            registry.Save(entry);
            return Task.CompletedTask;
        }, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Stops a running or paused VM: through its agent when ready (and not forced), then Ctrl-Alt-Del for the
    /// grace period, then by force. <paramref name="graceSeconds"/> 0 means the daemon's default.
    /// </summary>
    public async Task<VmInfo> StopAsync(string id, int graceSeconds, bool force, CancellationToken ct)
    {
        SpecValidator.ValidateGrace(graceSeconds, "grace_period_seconds");
        return await UnderOpAsync(id, async entry =>
        {
            var session = entry.RequireSession("stop", VmPhase.Running, VmPhase.Paused);
            var grace = graceSeconds > 0 ? TimeSpan.FromSeconds(graceSeconds) : options.DefaultStopGrace;
            bool viaAgent;
            lock (entry.Gate)
            {
                // A paused guest cannot answer its agent: it is stopped by force at once, as before.
                viaAgent = !force && entry.Vm.AgentReady && entry.Vm.Phase == VmPhase.Running;
                entry.Vm = entry.Vm with { Phase = VmPhase.Stopping };
                events.Publish(entry.Event(VmEventKind.StateChanged, force ? "stopping by force" : $"stopping (grace period {grace.TotalSeconds:F0} s)"));
            }
            registry.Save(entry);
            if (viaAgent && await agents.TryShutdownAsync(entry, grace, ct).ConfigureAwait(false)) return;
            WorkerStatus status;
            try
            {
                status = await session.Client.CallAsync(new WorkerRequest { Stop = new StopMachine { Force = force, GraceMs = (int)grace.TotalMilliseconds } }, ct).ConfigureAwait(false);
            }
            catch (VmApiException e) when (e.Kind == VmErrorKind.WrongState)
            {
                // The guest ended on its own just before: that is the outcome asked for.
                status = await session.Client.CallAsync(new WorkerRequest { Status = new Empty() }, ct).ConfigureAwait(false);
                if (status.State != MachineState.Exited) throw;
            }
            supervisor.Apply(entry, session, status);
        }, ct).ConfigureAwait(false);
    }

    /// <summary>Deletes a VM that is not running (or any, with <paramref name="force"/>): its worker, files and id go.</summary>
    public async Task DeleteAsync(string id, bool force, CancellationToken ct)
    {
        var entry = registry.Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            entry.ThrowIfDeleted();
            var phase = entry.Snapshot().Phase;
            if (!force && phase is VmPhase.Running or VmPhase.Paused or VmPhase.Stopping)
                throw entry.WrongState("delete", " (stop it first, or delete with force)");
            // From here on the deletion completes whatever the caller does: a half-deleted VM is worse than a late reply.
            await RemoveAsync(entry).ConfigureAwait(false);
            events.Publish(new VmLifecycleEvent { Kind = VmEventKind.Deleted, Id = id, Time = VmEntry.Now(), Message = "deleted" });
            VmLog.Deleted(logger, id);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    /// <summary>Undoes a create or restore that failed: nothing half-created stays (the worker, its files and the id all go).</summary>
    private Task AbandonAsync(VmEntry entry) => RemoveAsync(entry);

    private async Task RemoveAsync(VmEntry entry)
    {
        await supervisor.RetireAsync(entry).ConfigureAwait(false);
        await cgroups.RemoveAsync(entry.Id).ConfigureAwait(false); // the worker is gone, so the cgroup is empty
        lock (entry.Gate) entry.Deleted = true;
        locks.Release(entry.Id); // the VM is gone: its images are free
        registry.Store.Remove(entry);
        registry.Remove(entry); // its jail uid is free again
        jails.Remove(entry.Id);
    }

    /// <summary>Runs <paramref name="action"/> on the VM under its op lock and returns the VM after it.</summary>
    private async Task<VmInfo> UnderOpAsync(string id, Func<VmEntry, Task> action, CancellationToken ct)
    {
        var entry = registry.Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            entry.ThrowIfDeleted();
            await action(entry).ConfigureAwait(false);
            return entry.Snapshot();
        }
        finally
        {
            entry.Op.Release();
        }
    }
}
