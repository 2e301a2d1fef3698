using FireSharp.Daemon.Isolation;
using FireSharp.Daemon.Jail;
using FireSharp.Daemon.Logs;
using FireSharp.Daemon.Workers;
using FireSharp.Proto.Worker;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// The VMs' workers: launches one per VM and builds its machine (create or restore), adopts live workers after
/// a daemon restart, watches each worker's events and death, and retires workers. A VM's state comes from its
/// worker: every worker status, from an event or a call's reply, is applied once, in the worker's order.
/// </summary>
internal sealed class WorkerSupervisor(DaemonOptions options, IWorkerLauncher launcher, VmCgroups cgroups, VmRegistry registry, EventHub events, GuestAgents agents, VmJails jails,
    DaemonSnapshotKeys snapshotKeys, ILogger logger, ILoggerFactory? loggers = null)
{
    private readonly WorkerLogs _logs = new(options, loggers, logger);

    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan ExitWait = TimeSpan.FromSeconds(5);

    /// <summary>Starts a worker, builds the machine in it (or restores it) and starts watching it. The entry's op lock is held.</summary>
    public async Task LaunchAsync(VmEntry entry, bool restart, CancellationToken ct)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        var launch = jails.LaunchFor(entry);
        long logStart = WorkerLogRelay.Length(launch.LogPath);
        WorkerProcess process;
        using (var span = Tracing.DaemonTracing.Start(Tracing.DaemonTracing.WorkerLaunchSpan))
        {
            span?.SetTag(Tracing.DaemonTracing.VmIdTag, entry.Id);
            span?.SetTag("firesharp.worker.jailed", launch.Jail is not null);
            try
            {
                process = await launcher.LaunchAsync(launch, ct).ConfigureAwait(false);
            }
            catch
            {
                _logs.RelayOnce(entry.Id, launch.LogPath, logStart); // why the worker did not start, in its own words
                throw;
            }
        }
        VmLog.WorkerLaunched(logger, entry.Id, process.Pid, launch.Jail is not null, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        var session = new WorkerSession(process, new WorkerClient(process.SocketPath)) { LogStart = logStart };
        _logs.StartRelay(entry, session);
        lock (entry.Gate)
        {
            entry.Session = session;
            entry.Worker = process.ToRecord();
            entry.Worker.Jailed = launch.Jail is not null;
            entry.Vm = entry.Vm with { WorkerPid = process.Pid };
        }
        registry.Save(entry);
        // Into the VM's cgroup before the first request: the worker runs no guest code until it builds the machine.
        // process.Pid is the worker itself (a jailed one's own pid, from SO_PEERCRED, not unshare's); the worker never
        // forks, and cgroup.procs moves all of its threads, so everything the VM runs is confined from here on.
        cgroups.Enter(entry.Id, entry.Snapshot().Spec, process.Pid);
        session.OomKillsAtStart = cgroups.OomKills(entry.Id);
        WorkerRequest request;
        if (entry.RestoredFrom is { } restore) // made by RestoreVm: restore, don't boot
        {
            agents.PrepareRestoredVsock(entry);
            // Unjailed, the worker verifies the snapshot with the daemon's keys; a jailed one gets none (its jailer verified).
            request = new WorkerRequest { Restore = RestoreMachineFor(entry.Id, restore, restart, launch.Jail is null ? snapshotKeys.Current : null) };
        }
        else
        {
            request = new WorkerRequest { Create = CreateMachineFor(entry, session) };
        }
        // Unjailed, the worker opens its drives by path: through the daemon's path policy, on the fds it then uses
        // (a jailed worker is handed fds its jailer opened through the same policy).
        if (launch.Jail is null)
        {
            var policy = new WorkerPathPolicy { AllowBlockDevices = options.AllowBlockDevices };
            policy.Roots.AddRange(options.PathRoots);
            if (request.Restore is { } r) r.PathPolicy = policy;
            else request.Create.PathPolicy = policy;
        }
        _logs.StartConsole(entry, session, replay: true); // before the guest runs: its first byte is kept
        await CallAsync(entry, session, request, ct).ConfigureAwait(false);
        if (entry.RestoredFrom is not null) agents.ProbeRestoredAgent(entry, session);
        StartMonitor(entry, session);
    }

    /// <summary>Sends a request to the VM's worker and applies the status it replies with.</summary>
    public async Task<WorkerStatus> CallAsync(VmEntry entry, WorkerSession session, WorkerRequest request, CancellationToken ct)
    {
        var status = await session.Client.CallAsync(request, ct).ConfigureAwait(false);
        Apply(entry, session, status);
        return status;
    }

    /// <summary>The machine of a VM made by CreateVm; adds the vsock device (the agent implies one, CID 3 by default).</summary>
    private CreateMachine CreateMachineFor(VmEntry entry, WorkerSession session)
    {
        var spec = entry.Snapshot().Spec;
        var machine = new CreateMachine
        {
            Id = entry.Id,
            KernelPath = spec.Kernel.Path,
            InitrdPath = spec.Kernel.InitrdPath ?? "",
            MemMib = (ulong)spec.MemMib,
            Vcpus = spec.Vcpus,
            PreferPvh = spec.Kernel.PreferPvh,
            Rng = spec.Rng,
            RngRateLimiter = RateLimiterUpdates.ToWire(spec.RngRateLimiter),
        };
        if (SpecValidator.EffectiveCmdline(spec) is { } cmdline) machine.Cmdline = cmdline;
        foreach (var d in spec.Drives)
            machine.Drives.Add(new Drive { Id = d.Id, Path = d.Path, ReadOnly = d.ReadOnly, Root = d.Root, RateLimiter = RateLimiterUpdates.ToWire(d.RateLimiter) });
        foreach (var n in spec.NetworkInterfaces)
        {
            machine.Nics.Add(new Nic
            {
                Id = n.Id, Tap = n.Tap ?? "", Mac = n.Mac ?? "", Ip = n.Ip ?? "",
                RxRateLimiter = RateLimiterUpdates.ToWire(n.RxRateLimiter), TxRateLimiter = RateLimiterUpdates.ToWire(n.TxRateLimiter),
            });
        }
        if (spec.Vsock is not null || spec.Agent)
        {
            machine.VsockPath = agents.PrepareVsock(entry, session, spec.Agent);
            machine.VsockCid = spec.Vsock?.GuestCid ?? 3;
        }
        return machine;
    }

    /// <summary>The worker request that restores a VM made by RestoreVm; a restart (StartVm after it ended) always runs it.</summary>
    private static RestoreMachine RestoreMachineFor(string id, RestoreVmCommand restore, bool restart, FireSharp.Snapshot.SnapshotKeys? keys)
    {
        var machine = new RestoreMachine
        {
            Id = id,
            Dir = restore.Dir,
            VsockPath = restore.VsockPath ?? "",
            Paused = restore.Paused && !restart,
        };
        foreach (var (driveId, path) in restore.DrivePaths) machine.DrivePaths[driveId] = path;
        // Over the worker's socket, never its command line: an unjailed worker checks the snapshot's HMAC with them.
        if (keys is not null) machine.Keys.AddRange(keys.All.Select(VmSnapshots.ToWire));
        return machine;
    }

    // ---------------------------------------------------------------- start-up

    /// <summary>At start-up: takes the VM's worker back if that very process is alive and answers; otherwise marks the VM as having lost it.</summary>
    public async Task AdoptOrReapAsync(VmEntry entry, CancellationToken ct)
    {
        if (entry.Worker is not { } record) return;
        var process = launcher.Adopt(record);
        if (process is not null)
        {
            var session = new WorkerSession(process, new WorkerClient(record.Socket))
            {
                OomKillsAtStart = cgroups.OomKills(entry.Id), LogStart = WorkerLogRelay.Length(WorkerLogs.WorkerLogPath(entry)),
            };
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(ExitWait);
                var status = await session.Client.CallAsync(new WorkerRequest { Status = new Empty() }, timeout.Token).ConfigureAwait(false);
                lock (entry.Gate) entry.Session = session;
                Apply(entry, session, status);
                _logs.StartRelay(entry, session);
                _logs.StartConsole(entry, session, replay: false); // what it wrote while no daemon ran is not in console.log
                StartMonitor(entry, session);
                VmLog.Adopted(logger, entry.Id, process.Pid, entry.Snapshot().Phase);
                return;
            }
            catch (Exception e) when (e is VmApiException or OperationCanceledException)
            {
                VmLog.AdoptFailed(logger, entry.Id, process.Pid, e.Message);
                process.Kill();
                await session.Client.DisposeAsync().ConfigureAwait(false);
            }
        }
        lock (entry.Gate)
        {
            var vm = entry.Vm;
            if (vm.Phase is not (VmPhase.Stopped or VmPhase.Failed))
                vm = vm with
                {
                    Phase = VmPhase.Failed,
                    End = VmEntry.End(VmEndKind.WorkerDied, $"the worker (pid {record.Pid}) was gone when the daemon started", clean: false),
                };
            entry.Vm = vm with { WorkerPid = 0 };
            entry.Worker = null;
        }
        registry.Save(entry);
        GuestAgents.TryDelete(options.WorkerSocket(entry.Id));
        VmLog.Reaped(logger, entry.Id);
    }

    /// <summary>Kills the worker of a create that never finished, if that very process is still alive.</summary>
    public void KillOrphan(WorkerRecord? record)
    {
        if (record is not null && launcher.Adopt(record) is { } orphan) orphan.Kill();
    }

    // ---------------------------------------------------------------- watching

    private void StartMonitor(VmEntry entry, WorkerSession session)
    {
        session.Monitor = Task.Run(async () =>
        {
            try
            {
                await foreach (var ev in session.Client.SubscribeAsync(session.Cts.Token).ConfigureAwait(false))
                    Apply(entry, session, ev.Status);
            }
            catch (OperationCanceledException) when (session.Cts.IsCancellationRequested) { return; }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException) { }
            if (session.Cts.IsCancellationRequested || session.ExpectedExit) return;

            // The event stream ended without a shutdown: the worker died (or broke; then it is put down).
            WorkerExit exit;
            try { exit = await session.Process.Exited.WaitAsync(ExitWait).ConfigureAwait(false); }
            catch (TimeoutException)
            {
                session.Process.Kill();
                exit = new WorkerExit($"worker process {session.Process.Pid} stopped answering and was killed");
            }
            OnWorkerDied(entry, session, exit);
        });
    }

    private void OnWorkerDied(VmEntry entry, WorkerSession session, WorkerExit exit)
    {
        string reason = exit.Reason;
        // The kernel's OOM killer sends SIGKILL, which a jailed worker's unshare may report only as a status: the
        // cgroup's own count says whether it was the OOM killer.
        long oomKills = exit.KilledBySeccomp ? 0 : cgroups.OomKills(entry.Id) - session.OomKillsAtStart;
        if (oomKills > 0) reason = $"{reason}: the VM's memory cgroup ran out (guest memory + {options.VmmMemoryAllowanceMib} MiB VmmMemoryAllowanceMib) and the kernel's OOM killer ended it";
        lock (entry.Gate)
        {
            if (entry.Session != session || entry.Deleted) return;
            entry.Session = null;
            entry.Worker = null;
            entry.Vm = entry.Vm with { WorkerPid = 0 };
            if (entry.Vm.Phase is not (VmPhase.Stopped or VmPhase.Failed))
            {
                var end = exit.KilledBySeccomp
                    ? VmEntry.End(VmEndKind.Seccomp, reason, clean: false) with { Syscall = exit.Syscall }
                    : VmEntry.End(oomKills > 0 ? VmEndKind.OutOfMemory : VmEndKind.WorkerDied, reason, clean: false);
                entry.Vm = entry.Vm with { Phase = VmPhase.Failed, End = end };
                events.Publish(entry.Event(VmEventKind.Exited, reason));
                events.Publish(entry.Event(VmEventKind.StateChanged, reason));
            }
        }
        registry.Save(entry);
        VmLog.WorkerDied(logger, entry.Id, reason);
        GuestAgents.TryDelete(session.Process.SocketPath);
        GuestAgents.Release(entry, session);
        _ = session.Client.DisposeAsync().AsTask();
    }

    /// <summary>Applies a worker status (from an event or a reply) once, in the worker's order, and publishes what changed.</summary>
    public void Apply(VmEntry entry, WorkerSession session, WorkerStatus status)
    {
        bool changed = false;
        lock (entry.Gate)
        {
            if (entry.Session != session || entry.Deleted) return;
            if (session.Applied && status.Seq < session.LastSeq) return;
            session.Applied = true;
            session.LastSeq = status.Seq;
            var vm = entry.Vm;
            if (status.BootTimeMs > 0 && vm.BootTimeMs == 0)
            {
                entry.Vm = vm = vm with { BootTimeMs = status.BootTimeMs };
                changed = true;
                events.Publish(entry.Event(VmEventKind.BootDone, $"boot done after {status.BootTimeMs:F1} ms") with { BootTimeMs = status.BootTimeMs });
            }
            if (status.State == MachineState.Exited && !session.ExitSeen)
            {
                session.ExitSeen = true;
                entry.Vm = vm = vm with { End = VmEntry.End(ToEndKind(status.ExitKind), status.ExitReason, status.ExitClean) };
                changed = true;
            }
            var next = status.State switch
            {
                MachineState.Created => VmPhase.Created,
                MachineState.Running => VmPhase.Running,
                MachineState.Paused => VmPhase.Paused,
                MachineState.Stopping => VmPhase.Stopping,
                MachineState.Exited => status.ExitClean ? VmPhase.Stopped : VmPhase.Failed,
                _ => vm.Phase,
            };
            if (next == VmPhase.Running && vm.StartedAt is null) entry.Vm = vm = vm with { StartedAt = VmEntry.Now() };
            // A guest can end before the worker's RUNNING status is applied (that status is then older
            // than the exit). Anything but a host stop means the vCPUs ran: say so first, in order.
            if (next is VmPhase.Stopped or VmPhase.Failed && vm.Phase == VmPhase.Created && entry.Announced
                && status.ExitKind != MachineExitKind.Stopped)
            {
                entry.Vm = vm = vm with { Phase = VmPhase.Running, StartedAt = vm.StartedAt ?? VmEntry.Now() };
                events.Publish(entry.Event(VmEventKind.StateChanged, $"now {VmEntry.Describe(VmPhase.Running)}"));
            }
            if (next != vm.Phase)
            {
                entry.Vm = vm = vm with { Phase = next };
                changed = true;
                if (next is VmPhase.Stopped or VmPhase.Failed)
                {
                    entry.Vm = vm with { AgentReady = false };
                    events.Publish(entry.Event(VmEventKind.Exited, entry.Vm.End?.Reason ?? ""));
                }
                // While the first create runs, its outcome is announced by the CREATED event alone.
                if (entry.Announced) events.Publish(entry.Event(VmEventKind.StateChanged, $"now {VmEntry.Describe(next)}"));
            }
        }
        if (changed) registry.Save(entry);
    }

    /// <summary>A machine's exit kind from the worker protocol (an unknown value is the VMM's failure).</summary>
    internal static VmEndKind ToEndKind(MachineExitKind kind) => kind switch
    {
        MachineExitKind.Reset => VmEndKind.Reset,
        MachineExitKind.PowerOff => VmEndKind.PowerOff,
        MachineExitKind.Stopped => VmEndKind.Stopped,
        MachineExitKind.Halt => VmEndKind.Halt,
        MachineExitKind.TripleFault => VmEndKind.TripleFault,
        MachineExitKind.FailEntry => VmEndKind.FailEntry,
        MachineExitKind.InternalError => VmEndKind.InternalError,
        MachineExitKind.GuestCrash => VmEndKind.GuestCrash,
        _ => VmEndKind.VmmError,
    };

    // ---------------------------------------------------------------- ending

    /// <summary>Shuts the VM's worker down (asking first, then SIGKILL) and waits until it is gone. Never throws.</summary>
    public async Task RetireAsync(VmEntry entry)
    {
        WorkerSession? session;
        lock (entry.Gate)
        {
            session = entry.Session;
            if (session is null) return;
            session.ExpectedExit = true;
        }
        try
        {
            using var timeout = new CancellationTokenSource(ShutdownTimeout);
            await CallAsync(entry, session, new WorkerRequest { Shutdown = new Empty() }, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is VmApiException or OperationCanceledException or InvalidOperationException)
        {
            VmLog.ShutdownRefused(logger, entry.Id, e.Message);
        }
        if (!await WaitExitedAsync(session.Process).ConfigureAwait(false))
        {
            session.Process.Kill();
            if (!await WaitExitedAsync(session.Process).ConfigureAwait(false))
                VmLog.WorkerWouldNotDie(logger, entry.Id, session.Process.Pid);
        }
        await session.Cts.CancelAsync().ConfigureAwait(false);
        await session.Client.DisposeAsync().ConfigureAwait(false);
        if (session.Monitor is { } monitor) await Task.WhenAny(monitor, Task.Delay(ExitWait)).ConfigureAwait(false);
        await WorkerLogs.EndAsync(session, ExitWait).ConfigureAwait(false); // its last lines relayed, its files closed
        bool save = false;
        lock (entry.Gate)
        {
            if (entry.Session == session)
            {
                entry.Session = null;
                entry.Worker = null;
                entry.Vm = entry.Vm with { WorkerPid = 0 };
                save = true;
            }
        }
        if (save) registry.Save(entry);
        GuestAgents.TryDelete(session.Process.SocketPath);
        GuestAgents.Release(entry, session);
    }

    /// <summary>Lets go of the VM's worker without stopping it (the daemon is stopping; the next one adopts it).</summary>
    public static async Task DetachAsync(VmEntry entry)
    {
        WorkerSession? session;
        lock (entry.Gate) session = entry.Session;
        if (session is null) return;
        await session.Cts.CancelAsync().ConfigureAwait(false);
        await session.Client.DisposeAsync().ConfigureAwait(false);
        await WorkerLogs.EndAsync(session, ExitWait).ConfigureAwait(false);
    }

    private static async Task<bool> WaitExitedAsync(WorkerProcess process)
    {
        try
        {
            await process.Exited.WaitAsync(ExitWait).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }
}
