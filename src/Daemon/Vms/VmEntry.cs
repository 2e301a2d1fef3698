using FireSharp.Daemon.Agent;
using FireSharp.Daemon.Workers;
using FireSharp.Proto.Worker;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// One VM in the registry. <see cref="Op"/> admits one lifecycle call at a time; <see cref="Gate"/> guards the
/// fields below it and is only held briefly, never across I/O to a worker or a disk write.
/// </summary>
internal sealed class VmEntry(string id, string dir)
{
    public string Id { get; } = id;

    /// <summary>The VM's directory: its record (vm.pb), worker socket and log, vsock socket.</summary>
    public string Dir { get; } = dir;

    public SemaphoreSlim Op { get; } = new(1, 1);
    public Lock Gate { get; } = new();

    /// <summary>The VM as the API shows it; replaced (never mutated) under <see cref="Gate"/>.</summary>
    public required VmInfo Vm { get; set; }

    /// <summary>The worker serving the VM, as recorded for a daemon restart; null when none.</summary>
    public WorkerRecord? Worker { get; set; }

    /// <summary>For a VM made by RestoreVm: what it was restored from (a restart restores it again).</summary>
    public RestoreVmCommand? RestoredFrom { get; init; }

    /// <summary>The VM's jail uid/gid, once it has one; kept (and recorded) until the VM is deleted.</summary>
    public JailIdentity? Jail { get; set; }

    public WorkerSession? Session { get; set; }
    public bool Deleted { get; set; }

    /// <summary>False while the first create runs: its outcome is announced by the CREATED event alone.</summary>
    public bool Announced { get; set; } = true;

    // Persistence bookkeeping (VmRecordStore): records are numbered under Gate and written under WriteLock,
    // newest last, so the file never goes back to an older state.
    internal long RecordVersion { get; set; }
    internal long WrittenVersion { get; set; }
    internal bool RecordRemoved { get; set; }
    internal Lock WriteLock { get; } = new();

    /// <summary>The VM now.</summary>
    public VmInfo Snapshot()
    {
        lock (Gate) return Vm;
    }

    /// <summary>Under <see cref="Gate"/>: an event about this VM as it is now.</summary>
    public VmLifecycleEvent Event(VmEventKind kind, string message) => new()
    {
        Kind = kind,
        Id = Id,
        Phase = Vm.Phase,
        End = kind == VmEventKind.Exited ? Vm.End : null,
        Time = Now(),
        Message = message,
    };

    public void ThrowIfDeleted()
    {
        lock (Gate)
            if (Deleted) throw VmApiException.NotFound(Id);
    }

    /// <summary>The live worker session, if the VM is in one of <paramref name="allowed"/>; otherwise WrongState.</summary>
    public WorkerSession RequireSession(string verb, params VmPhase[] allowed)
    {
        lock (Gate)
        {
            if (!allowed.Contains(Vm.Phase) || Session is null) throw WrongStateLocked(verb, "");
            return Session;
        }
    }

    public VmApiException WrongState(string verb, string hint)
    {
        lock (Gate) return WrongStateLocked(verb, hint);
    }

    private VmApiException WrongStateLocked(string verb, string hint) =>
        VmApiException.WrongState($"cannot {verb} VM '{Id}': it is {Describe(Vm.Phase)}{hint}");

    public static string Describe(VmPhase phase) => phase switch
    {
        VmPhase.Creating => "being created",
        VmPhase.Created => "created and not started",
        VmPhase.Running => "running",
        VmPhase.Paused => "paused",
        VmPhase.Stopping => "stopping",
        VmPhase.Stopped => "stopped",
        VmPhase.Failed => "failed",
        _ => "in an unknown state",
    };

    /// <summary>Phases in which the VM holds a machine (and so its memory).</summary>
    public static bool HoldsMachine(VmPhase phase) =>
        phase is VmPhase.Creating or VmPhase.Created or VmPhase.Running or VmPhase.Paused or VmPhase.Stopping;

    public static DateTimeOffset Now() => DateTimeOffset.UtcNow;

    public static VmEnd End(VmEndKind kind, string reason, bool clean) => new(kind, reason, clean, Now());
}

/// <summary>One worker serving a VM, from its launch (or adoption) until it is retired or dies.</summary>
internal sealed class WorkerSession(WorkerProcess process, WorkerClient client)
{
    public WorkerProcess Process { get; } = process;
    public WorkerClient Client { get; } = client;
    public CancellationTokenSource Cts { get; } = new();

    /// <summary>Watches the worker's events; ends with the worker.</summary>
    public Task? Monitor { get; set; }

    /// <summary>The VM cgroup's OOM-kill count when this worker entered it (the cgroup outlives a worker restart).</summary>
    public long OomKillsAtStart { get; set; }

    /// <summary>The daemon asked the worker to go: its end is not a death.</summary>
    public bool ExpectedExit { get; set; }

    // The worker's statuses are applied once each, in its order (WorkerSupervisor.Apply).
    public bool Applied { get; set; }
    public ulong LastSeq { get; set; }
    public bool ExitSeen { get; set; }

    /// <summary>Where this worker's lines start in worker.log: the file's length at its launch or adoption.</summary>
    public long LogStart { get; init; }

    /// <summary>Relays worker.log into the daemon's log, and copies the console into console.log; both end with the session.</summary>
    public Task? LogRelay { get; set; }
    public Task? ConsoleRecorder { get; set; }

    /// <summary>Waits for the guest agent's ready report (spec.agent), until the session ends.</summary>
    public AgentReadyListener? ReadyListener { get; set; }
}
