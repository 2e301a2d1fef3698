// Over 400 lines: one VM's whole life in the worker (create, restore, start, pause, resume, stop, snapshot,
// live limiter updates, confinement before the first run, the end); the socket side is WorkerServer.
using System.Threading.Channels;
using FireSharp.Kvm.Files;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// The worker's VM and its life: create or restore, start, pause, resume, stop, snapshot, and what happens when
/// the guest ends. It keeps the status the protocol reports (state, exit, boot time, a sequence number) and
/// tells subscribers of every change. It knows nothing of sockets or framing: <see cref="WorkerServer"/> calls it.
/// Operations fail with a <see cref="WorkerFailure"/>.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001",
    Justification = "_lifecycle is a SemaphoreSlim whose wait handle is never created, so Dispose would free nothing; a request "
        + "still in flight when the worker goes would then get ObjectDisposedException from Release instead of finishing.")]
internal sealed class WorkerMachine(ILogger logger)
{
    private static readonly TimeSpan PauseTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan ForceStopTimeout = TimeSpan.FromSeconds(10);

    private readonly Lock _gate = new();
    private readonly SemaphoreSlim _lifecycle = new(1, 1); // one create/start/pause/resume/stop/shutdown at a time
    private readonly List<Channel<WorkerEvent>> _subscribers = [];
    private readonly TaskCompletionSource _exitHandled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously); // the worker is going
    private MicroVm? _vm;
    private MachineState _state = MachineState.Empty;
    private MachineExitKind _exitKind;
    private string _exitReason = "";
    private bool _exitClean;
    private double _bootMs;
    private ulong _seq;

    /// <summary>The guest's console: its output history and live streams.</summary>
    public ConsoleLog Console { get; } = new();

    /// <summary>The VM's id, for logs ("" until created).</summary>
    public string Id { get; private set; } = "";

    /// <summary>The process id reported in statuses.</summary>
    public int Pid { get; set; } = Environment.ProcessId;

    /// <summary>
    /// Confines the process (the seccomp filter) once the machine is built and before its vCPU threads first start,
    /// on both paths: a created machine's start and a restore. Null (tests, an unconfined worker): nothing.
    /// </summary>
    public Action? Confine { get; set; }

    private bool _confined;

    /// <summary>Releases an ended machine (guest memory, KVM fds); tests make it fail.</summary>
    public Action<MicroVm> ReleaseMachine { get; set; } = static vm => vm.Dispose();

    /// <summary>The machine, if built (tests look at its devices).</summary>
    internal MicroVm? CurrentVm
    {
        get { lock (_gate) return _vm; }
    }

    public bool IsEmpty
    {
        get { lock (_gate) return _state == MachineState.Empty; }
    }

    /// <summary>Runs one lifecycle operation at a time (requests are served concurrently, one per connection).</summary>
    public async Task<T> ExclusiveAsync<T>(Func<Task<T>> operation)
    {
        await _lifecycle.WaitAsync().ConfigureAwait(false);
        try
        {
            return await operation().ConfigureAwait(false);
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Builds the machine and loads the kernel; it is then CREATED.</summary>
    public void Create(CreateMachine c)
    {
        RequireEmpty("create");
        UsePathPolicy(c.PathPolicy);
        MicroVm vm;
        try
        {
            vm = MicroVm.Create(MachineSpecs.ToVmSpec(c, Console, logger));
        }
        catch (Exception e) when (WorkerFailures.ForCreate(e) is { } failure)
        {
            throw failure;
        }
        Adopt(c.Id, vm, MachineState.Created);
        WorkerLog.Created(logger, c.Id, c.MemMib, c.Vcpus, c.KernelPath);
    }

    /// <summary>Builds the machine from a snapshot; it is then RUNNING, or PAUSED when asked.</summary>
    public void Restore(RestoreMachine r)
    {
        RequireEmpty("restore into");
        UsePathPolicy(r.PathPolicy);
        MicroVm vm;
        try
        {
            vm = SnapshotRestore.Restore(r.Dir, MachineSpecs.ToRestoreOverrides(r, Console, logger) with { BeforeVcpusStart = ConfineOnce });
        }
        catch (Exception e) when (WorkerFailures.ForRestore(e) is { } failure)
        {
            throw failure;
        }
        Adopt(r.Id, vm, r.Paused ? MachineState.Paused : MachineState.Running);
        _ = WatchBootDoneAsync(vm);
        WorkerLog.Restored(logger, r.Id, r.Dir, r.Paused ? "paused" : "running");
    }

    /// <summary>
    /// This machine is the process's only one (the firesharp-vmm worker), so process-wide settings such as the path
    /// policy may be set for it; false for machines hosted in another process (tests' in-process workers).
    /// </summary>
    public static bool OwnsProcess { get; set; }

    /// <summary>The daemon's path policy for the drives this (unjailed) worker opens by path; none: by path (firesharp run).</summary>
    private static void UsePathPolicy(WorkerPathPolicy? policy)
    {
        if (!OwnsProcess || policy is null || policy.Roots.Count == 0) return;
        try
        {
            PathPolicy.ForThisProcess = new PathPolicy(policy.Roots, policy.AllowBlockDevices);
        }
        catch (ArgumentException e)
        {
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, "spec", $"the daemon's path policy is unusable: {e.Message}");
        }
    }

    private void Adopt(string id, MicroVm vm, MachineState state)
    {
        lock (_gate)
        {
            Id = id;
            _vm = vm;
            SetState(state);
        }
        _ = WatchExitAsync(vm);
    }

    public void Start()
    {
        MicroVm vm;
        lock (_gate)
        {
            vm = RequireStateLocked("start", MachineState.Created);
            // RUNNING before the vCPUs start: a guest that ends at once must still be seen running first.
            SetState(MachineState.Running);
        }
        try
        {
            ConfineOnce();
            vm.Start();
        }
        catch
        {
            lock (_gate)
                if (_state == MachineState.Running) SetState(MachineState.Created);
            throw;
        }
        _ = WatchBootDoneAsync(vm);
    }

    /// <summary>Runs <see cref="Confine"/> the first time; a failure to confine is the host's (UNAVAILABLE), and nothing runs unconfined.</summary>
    private void ConfineOnce()
    {
        if (_confined || Confine is not { } confine) return;
        try
        {
            confine();
        }
        catch (SeccompException e)
        {
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorUnavailable, "", $"cannot confine the worker: {e.Message}");
        }
        _confined = true;
    }

    public void Pause()
    {
        var vm = RequireState("pause", MachineState.Running);
        bool paused;
        try { paused = vm.Pause(PauseTimeout); }
        catch (InvalidOperationException) { throw WrongState("pause"); } // the guest ended meanwhile
        if (!paused)
        {
            lock (_gate)
                if (_state == MachineState.Exited) throw WrongState("pause");
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorTimeout, "", $"the vCPUs did not pause within {PauseTimeout.TotalSeconds:F0} s");
        }
        lock (_gate)
            if (_state == MachineState.Running) SetState(MachineState.Paused);
    }

    public void Resume()
    {
        var vm = RequireState("resume", MachineState.Paused);
        try { vm.Resume(); }
        catch (InvalidOperationException) { throw WrongState("resume"); }
        lock (_gate)
            if (_state == MachineState.Paused) SetState(MachineState.Running);
    }

    /// <summary>Replaces rate limiters on the built machine, all or none (a bad limiter or an unknown device changes nothing).</summary>
    public void UpdateRateLimiters(UpdateRateLimiters u) =>
        MachineSpecs.UpdateRateLimiters(RequireState("update the rate limiters of", MachineState.Created, MachineState.Running, MachineState.Paused), u);

    /// <summary>Stops the guest: Ctrl-Alt-Del and the grace period unless forced (or paused), then the vCPUs; returns once the exit is handled.</summary>
    public async Task StopAsync(StopMachine stop)
    {
        MicroVm vm;
        bool graceful;
        lock (_gate)
        {
            vm = RequireStateLocked("stop", MachineState.Running, MachineState.Paused);
            graceful = !stop.Force && _state == MachineState.Running; // a paused guest cannot see Ctrl-Alt-Del
            SetState(MachineState.Stopping);
        }
        if (graceful && vm.Keyboard.SendCtrlAltDel())
        {
            WorkerLog.SentCtrlAltDel(logger, Id, stop.GraceMs);
            await Task.WhenAny(vm.Exited, Task.Delay(Math.Max(0, stop.GraceMs))).ConfigureAwait(false);
        }
        if (!vm.Exited.IsCompleted)
        {
            WorkerLog.StoppingVcpus(logger, Id);
            await Task.Run(() => vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, graceful
                ? $"stopped by force after a {stop.GraceMs} ms grace period"
                : "stopped by the host"))).ConfigureAwait(false);
        }
        if (await Task.WhenAny(vm.Exited, Task.Delay(ForceStopTimeout)).ConfigureAwait(false) != vm.Exited)
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorTimeout, "", "the vCPU threads did not stop in time");
        await _exitHandled.Task.ConfigureAwait(false);
    }

    /// <summary>For the worker's shutdown: stops the guest if it runs and waits (boundedly) until its end is handled.</summary>
    public Task ShutdownAsync() => ExclusiveAsync(async () =>
    {
        MicroVm? vm;
        lock (_gate) vm = _vm;
        if (vm is null) return true;
        if (!vm.Exited.IsCompleted) vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "worker shut down"));
        await Task.WhenAny(vm.Exited, Task.Delay(ForceStopTimeout)).ConfigureAwait(false);
        await Task.WhenAny(_exitHandled.Task, Task.Delay(ForceStopTimeout)).ConfigureAwait(false);
        return true;
    });

    /// <summary>Snapshots the machine; on failure the machine is as it was (SnapshotWriter puts it back).</summary>
    public SnapshotTaken TakeSnapshot(TakeSnapshot t)
    {
        var vm = RequireState("snapshot", MachineState.Running, MachineState.Paused);
        SnapshotResult result;
        try
        {
            result = SnapshotWriter.Create(vm, t.Dir, t.Resume, diff: t.Diff, trackDirty: t.TrackDirty, recordAs: t.RecordedDir.Length == 0 ? null : t.RecordedDir);
        }
        catch (SnapshotException e)
        {
            throw WorkerFailures.ForSnapshot(e);
        }
        catch (ArgumentException e)
        {
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, "", $"bad snapshot signing key: {e.Message}");
        }
        lock (_gate)
        {
            if (_state is MachineState.Running or MachineState.Paused)
                SetState(vm.Machine.State == VmState.Paused ? MachineState.Paused : MachineState.Running);
        }
        WorkerLog.SnapshotTaken(logger, Id, result.Directory, result.MemoryBytesWritten, result.MemoryBytes, result.Elapsed.TotalMilliseconds);
        return MachineSpecs.ToWire(result, Status());
    }

    /// <summary>Bytes for the guest's COM1; what its receiver has no room for is dropped (the guest is not reading).</summary>
    public void Input(ReadOnlySpan<byte> data)
    {
        MicroVm? vm;
        lock (_gate) vm = _vm;
        if (vm is null) throw WrongState("send console input to");
        while (!data.IsEmpty)
        {
            int taken = vm.Serial.EnqueueInput(data);
            if (taken == 0) break;
            data = data[taken..];
        }
    }

    // ---------------------------------------------------------------- the guest's end and boot-done

    private async Task WatchExitAsync(MicroVm vm)
    {
        var exit = await vm.Exited.ConfigureAwait(false);
        double boot = vm.BootTimer.BootDone?.TotalMilliseconds ?? 0;
        lock (_gate)
        {
            if (boot > 0 && _bootMs == 0) _bootMs = boot;
            _exitKind = WorkerFailures.ToWire(exit.Kind);
            _exitReason = exit.Reason;
            _exitClean = exit.IsClean;
            _vm = null;
            SetState(MachineState.Exited);
        }
        WorkerLog.GuestEnded(logger, Id, exit);
        Console.CompleteAll(); // console streams end with the guest
        try
        {
            ReleaseMachine(vm); // releases guest memory and KVM fds; the console history stays
        }
        catch (Exception e)
        {
            WorkerLog.ReleaseFailed(logger, e, Id);
        }
        finally
        {
            _exitHandled.TrySetResult(); // a stop waits for this: it must come whatever the release did
        }
    }

    /// <summary>Tells the subscribers when the guest signals boot-done; nothing polls, so an idle guest costs no CPU.</summary>
    private async Task WatchBootDoneAsync(MicroVm vm)
    {
        var done = vm.BootTimer.Done;
        await Task.WhenAny(done, vm.Exited, _closed.Task).ConfigureAwait(false);
        if (!done.IsCompleted) return; // the guest ended first, or the worker is going
        lock (_gate)
        {
            if (_bootMs != 0) return;
            _bootMs = done.Result.TotalMilliseconds;
            _seq++;
            Broadcast(new WorkerEvent { Status = StatusLocked(), BootDone = true });
        }
    }

    // ---------------------------------------------------------------- status and subscribers

    public WorkerStatus Status()
    {
        lock (_gate) return StatusLocked();
    }

    /// <summary>Events from now on, starting with the current status (taken atomically with the subscription).</summary>
    public ChannelReader<WorkerEvent> Subscribe()
    {
        var channel = Channel.CreateUnbounded<WorkerEvent>(new() { SingleReader = true });
        lock (_gate)
        {
            channel.Writer.TryWrite(new WorkerEvent { Status = StatusLocked() });
            if (_closed.Task.IsCompleted) channel.Writer.TryComplete();
            else _subscribers.Add(channel);
        }
        return channel.Reader;
    }

    public void Unsubscribe(ChannelReader<WorkerEvent> reader)
    {
        lock (_gate) _subscribers.RemoveAll(c => c.Reader == reader);
    }

    /// <summary>The worker is going: event and console streams end, watchers stop.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _closed.TrySetResult();
            foreach (var s in _subscribers) s.Writer.TryComplete();
            _subscribers.Clear();
        }
        Console.CompleteAll();
    }

    /// <summary>Releases the machine, if any (the worker is being disposed).</summary>
    public async Task DisposeMachineAsync()
    {
        MicroVm? vm;
        lock (_gate) { vm = _vm; _vm = null; }
        if (vm is not null) await Task.Run(vm.Dispose).ConfigureAwait(false);
    }

    private WorkerStatus StatusLocked() => new()
    {
        State = _state,
        ExitKind = _exitKind,
        ExitReason = _exitReason,
        ExitClean = _exitClean,
        BootTimeMs = _bootMs,
        Pid = Pid,
        Seq = _seq,
    };

    /// <summary>Under <see cref="_gate"/>: changes the state and tells every subscriber.</summary>
    private void SetState(MachineState state)
    {
        if (_state == state) return;
        _state = state;
        _seq++;
        Broadcast(new WorkerEvent { Status = StatusLocked() });
    }

    private void Broadcast(WorkerEvent ev)
    {
        foreach (var s in _subscribers) s.Writer.TryWrite(ev);
    }

    // ---------------------------------------------------------------- states

    /// <summary>Before a create or restore: no machine yet; otherwise WrongState.</summary>
    private void RequireEmpty(string what)
    {
        lock (_gate)
            if (_state != MachineState.Empty) throw WrongStateLocked(what);
    }

    /// <summary>The machine, when the state is one of <paramref name="allowed"/>; otherwise WrongState.</summary>
    private MicroVm RequireState(string what, params MachineState[] allowed)
    {
        lock (_gate) return RequireStateLocked(what, allowed);
    }

    private MicroVm RequireStateLocked(string what, params MachineState[] allowed) =>
        allowed.Contains(_state) && _vm is { } vm ? vm : throw WrongStateLocked(what);

    private WorkerFailure WrongState(string what)
    {
        lock (_gate) return WrongStateLocked(what);
    }

    private WorkerFailure WrongStateLocked(string what) =>
        new(WorkerErrorCode.WorkerErrorWrongState, "", $"cannot {what} a VM that is {Describe(_state)}");

    internal static string Describe(MachineState s) => s switch
    {
        MachineState.Empty => "not created",
        MachineState.Created => "created and not started",
        MachineState.Running => "running",
        MachineState.Paused => "paused",
        MachineState.Stopping => "stopping",
        MachineState.Exited => "stopped",
        _ => s.ToString(),
    };
}
