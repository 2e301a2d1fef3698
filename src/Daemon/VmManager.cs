using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using FireSharp.Daemon.Workers;
using FireSharp.Worker.Protocol;
using FireSharp.Proto.V1;
using FireSharp.Proto.Worker;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon;

using Vm = FireSharp.Proto.V1.Vm;

/// <summary>
/// The daemon's core: the VMs, their workers and their records on disk. The gRPC service is a thin layer
/// over this class; every failure leaves as a <see cref="VmApiException"/>.
/// </summary>
/// <remarks>
/// <para>Concurrency: each VM has an operation lock (one lifecycle call at a time) and a state lock (short,
/// never held across I/O to a worker). A VM's state comes from its worker: the daemon subscribes to the
/// worker's events and applies each status once, in the worker's sequence order, whichever of the event
/// or a call's reply arrives first.</para>
/// <para>On disk: <c>&lt;StateDir&gt;/vms/&lt;id&gt;/</c> holds <c>vm.pb</c> (the record), <c>worker.sock</c> and
/// <c>worker.log</c>. A directory without <c>vm.pb</c>, or with a record still CREATING, is a create that
/// did not finish, and is removed at start-up.</para>
/// </remarks>
public sealed partial class VmManager : IAsyncDisposable
{
    private static readonly TimeSpan ShutdownTimeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan ExitWait = TimeSpan.FromSeconds(5);

    private readonly DaemonOptions _options;
    private readonly IWorkerLauncher _launcher;
    private readonly HostLimits _host;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, VmEntry> _vms = new(StringComparer.Ordinal);
    private readonly Lock _admission = new(); // the VM count and memory budget: check and reserve together
    private bool _disposed;

    public VmManager(DaemonOptions options, IWorkerLauncher launcher, HostLimits host, ILogger<VmManager> logger)
    {
        _options = options;
        _launcher = launcher;
        _host = host;
        _logger = logger;
    }

    public EventHub Events { get; } = new();

    public DaemonOptions Options => _options;

    // ---------------------------------------------------------------- start-up: adopt or reap

    /// <summary>Loads the state directory: re-adopts live workers, marks VMs whose worker is gone as FAILED, removes half-created VMs.</summary>
    public async Task InitializeAsync(CancellationToken ct)
    {
        // Worker sockets and logs live here: only the daemon's user gets in.
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(_options.VmsDir);
        else Directory.CreateDirectory(_options.VmsDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var dir in Directory.GetDirectories(_options.VmsDir).Order(StringComparer.Ordinal))
        {
            ct.ThrowIfCancellationRequested();
            string id = Path.GetFileName(dir);
            string recordPath = Path.Combine(dir, "vm.pb");
            VmRecord? record = null;
            try
            {
                if (File.Exists(recordPath)) record = VmRecord.Parser.ParseFrom(await File.ReadAllBytesAsync(recordPath, ct).ConfigureAwait(false));
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or IOException)
            {
                Log.CorruptRecord(_logger, recordPath, e.Message);
                continue; // keep it for a human to look at; the id stays taken
            }
            if (record?.Vm is null || record.Vm.Id != id || record.Vm.State == VmState.Creating)
            {
                // A create that never finished: its worker (if any) and files go.
                if (record?.Worker is { } w && _launcher.Adopt(w) is { } orphan) orphan.Kill();
                Log.RemovedHalfCreated(_logger, dir);
                TryDeleteDirectory(dir);
                continue;
            }
            var entry = new VmEntry(id, dir) { Record = record };
            _vms[id] = entry;
            await AdoptOrReapAsync(entry, ct).ConfigureAwait(false);
        }
    }

    private async Task AdoptOrReapAsync(VmEntry entry, CancellationToken ct)
    {
        var record = entry.Record;
        if (record.Worker is null) return;
        var process = _launcher.Adopt(record.Worker);
        if (process is not null)
        {
            var session = new WorkerSession(process, new WorkerClient(record.Worker.Socket));
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(ExitWait);
                var status = await session.Client.CallAsync(new WorkerRequest { Status = new Proto.Worker.Empty() }, timeout.Token).ConfigureAwait(false);
                lock (entry.Gate) entry.Session = session;
                Apply(entry, session, status);
                StartMonitor(entry, session);
                Log.Adopted(_logger, entry.Id, process.Pid, entry.Record.Vm.State);
                return;
            }
            catch (Exception e) when (e is VmApiException or OperationCanceledException)
            {
                Log.AdoptFailed(_logger, entry.Id, process.Pid, e.Message);
                process.Kill();
                await session.Client.DisposeAsync().ConfigureAwait(false);
            }
        }
        lock (entry.Gate)
        {
            var vm = entry.Record.Vm;
            if (vm.State is not (VmState.Stopped or VmState.Failed))
            {
                vm.Exit = ExitInfo(ExitKind.WorkerDied, $"the worker (pid {record.Worker.Pid}) was gone when the daemon started", clean: false);
                vm.State = VmState.Failed;
            }
            entry.Record.Worker = null;
            vm.WorkerPid = 0;
            Persist(entry);
        }
        TryDelete(_options.WorkerSocket(entry.Id));
        Log.Reaped(_logger, entry.Id);
    }

    // ---------------------------------------------------------------- create

    public async Task<Vm> CreateAsync(CreateVmRequest request, CancellationToken ct)
    {
        SpecValidator.ValidateCreate(request, _host, _options.MaxIdLength);
        string id = request.Id;
        var entry = new VmEntry(id, _options.VmDir(id))
        {
            Announced = false,
            Record = new VmRecord
            {
                Vm = new Vm { Id = id, Labels = { request.Labels }, Spec = request.Spec.Clone(), State = VmState.Creating, CreatedAt = Now() },
            },
        };
        lock (_admission)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_vms.ContainsKey(id)) throw new VmApiException(VmErrorKind.AlreadyExists, "id", $"a VM with id '{id}' exists");
            if (_vms.Count >= _options.MaxVms)
                throw VmApiException.Exhausted(null, $"this daemon allows at most {_options.MaxVms} VMs (MaxVms) and has {_vms.Count}");
            CheckMemoryBudget(request.Spec.Machine.MemMib, except: null);
            _vms[id] = entry;
        }

        await entry.Op.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            try
            {
                if (Directory.Exists(entry.Dir)) Directory.Delete(entry.Dir, recursive: true); // leftover of a crashed create
                Directory.CreateDirectory(entry.Dir);
                lock (entry.Gate) Persist(entry);
                await LaunchAndCreateAsync(entry, ct).ConfigureAwait(false);
                lock (entry.Gate)
                {
                    entry.Announced = true;
                    Events.Publish(Event(EventType.Created, entry, "created"));
                }
                if (request.Start) await StartCoreAsync(entry, ct).ConfigureAwait(false);
            }
            catch
            {
                await AbandonAsync(id, entry).ConfigureAwait(false);
                throw;
            }
            Log.Created(_logger, id, request.Spec.Machine.MemMib, request.Spec.Machine.Vcpus);
            return Snapshot(entry);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    /// <summary>Under <see cref="_admission"/>: throws ResourceExhausted when the memory of VMs with a machine would pass the budget.</summary>
    private void CheckMemoryBudget(long memMib, VmEntry? except)
    {
        if (_host.MemoryBytes == ulong.MaxValue) return;
        long committed = 0;
        foreach (var e in _vms.Values)
        {
            if (e == except) continue;
            lock (e.Gate)
                if (e.Record.Vm.State is VmState.Creating or VmState.Created or VmState.Running or VmState.Paused or VmState.Stopping)
                    committed += e.Record.Vm.Spec.Machine.MemMib;
        }
        long budget = (long)(_host.MemoryBytes / (1024 * 1024) * _options.MemoryOvercommit);
        if (committed + memMib > budget)
            throw VmApiException.Exhausted("spec.machine.mem_mib",
                $"{memMib} MiB more would bring VM memory to {committed + memMib} MiB; the budget is {budget} MiB (host memory x MemoryOvercommit {_options.MemoryOvercommit})");
    }

    /// <summary>Starts a worker, builds the machine in it and starts watching it. The entry's op lock is held.</summary>
    private async Task LaunchAndCreateAsync(VmEntry entry, CancellationToken ct, bool restart = false)
    {
        VmSpec spec;
        lock (entry.Gate) spec = entry.Record.Vm.Spec;
        var process = await _launcher.LaunchAsync(entry.Id, _options.WorkerSocket(entry.Id), Path.Combine(entry.Dir, "worker.log"), ct).ConfigureAwait(false);
        var session = new WorkerSession(process, new WorkerClient(process.SocketPath));
        lock (entry.Gate)
        {
            entry.Session = session;
            entry.Record.Worker = process.ToRecord();
            entry.Record.Vm.WorkerPid = process.Pid;
            Persist(entry);
        }
        if (entry.Record.RestoredFrom is { } restore) // made by RestoreVm: restore, don't boot (VmManagerSnapshots.cs)
        {
            PrepareRestoredVsock(entry);
            Apply(entry, session, await session.Client.CallAsync(new WorkerRequest { Restore = RestoreMachineFor(entry.Id, restore, restart) }, ct).ConfigureAwait(false));
            ProbeRestoredAgent(entry, session);
            StartMonitor(entry, session);
            return;
        }
        var machine = new CreateMachine
        {
            Id = entry.Id,
            KernelPath = spec.Kernel.Path,
            InitrdPath = spec.Kernel.InitrdPath,
            MemMib = (ulong)spec.Machine.MemMib,
            Vcpus = spec.Machine.Vcpus,
            PreferPvh = spec.Kernel.PreferPvh,
        };
        if (SpecValidator.EffectiveCmdline(spec) is { } cmdline) machine.Cmdline = cmdline;
        foreach (var d in spec.Drives) machine.Drives.Add(new Drive { Path = d.Path, ReadOnly = d.ReadOnly, Root = d.Root });
        foreach (var n in spec.NetworkInterfaces)
            machine.Nics.Add(new Nic { Id = n.Id, Tap = n.HostCase == NetworkInterfaceSpec.HostOneofCase.Tap ? n.Tap : "", Mac = n.Mac, Ip = n.Ip });
        PrepareVsock(entry, session, spec, machine);
        var status = await session.Client.CallAsync(new WorkerRequest { Create = machine }, ct).ConfigureAwait(false);
        Apply(entry, session, status);
        StartMonitor(entry, session);
    }

    // ---------------------------------------------------------------- lifecycle

    public async Task<Vm> StartAsync(string id, CancellationToken ct)
    {
        var entry = Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfDeleted(entry);
            await StartCoreAsync(entry, ct).ConfigureAwait(false);
            return Snapshot(entry);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    private async Task StartCoreAsync(VmEntry entry, CancellationToken ct)
    {
        WorkerSession? session;
        VmState state;
        lock (entry.Gate) (session, state) = (entry.Session, entry.Record.Vm.State);
        switch (state)
        {
            case VmState.Created when session is not null:
                Apply(entry, session, await session.Client.CallAsync(new WorkerRequest { Start = new Proto.Worker.Empty() }, ct).ConfigureAwait(false));
                return;
            case VmState.Stopped or VmState.Failed:
                await RestartAsync(entry, ct).ConfigureAwait(false);
                return;
            default:
                throw WrongState(entry, "start", state == VmState.Paused ? " (use ResumeVm)" : "");
        }
    }

    /// <summary>Starts an ended VM again from its spec in a fresh worker.</summary>
    private async Task RestartAsync(VmEntry entry, CancellationToken ct)
    {
        await RetireSessionAsync(entry).ConfigureAwait(false); // the old worker only kept the console history
        lock (_admission)
        {
            long mem;
            lock (entry.Gate) mem = entry.Record.Vm.Spec.Machine.MemMib;
            CheckMemoryBudget(mem, except: entry);
            lock (entry.Gate)
            {
                entry.Record.Vm.State = VmState.Creating;
                entry.Record.Vm.Exit = null;
                entry.Record.Vm.BootTimeMs = 0;
                entry.Record.Vm.StartedAt = null;
                entry.Record.Vm.AgentReady = false;
                Persist(entry);
            }
        }
        Events.Publish(Event(EventType.StateChanged, entry, "restarting in a new worker"));
        try
        {
            await LaunchAndCreateAsync(entry, ct, restart: true).ConfigureAwait(false);
            bool created; // a restored VM runs already
            lock (entry.Gate) created = entry.Record.Vm.State == VmState.Created;
            if (created) await StartCoreAsync(entry, ct).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await RetireSessionAsync(entry).ConfigureAwait(false);
            lock (entry.Gate)
            {
                entry.Record.Vm.State = VmState.Failed;
                entry.Record.Vm.Exit = ExitInfo(ExitKind.VmmError, $"restart failed: {e.Message}", clean: false);
                Persist(entry);
                Events.Publish(Event(EventType.Exited, entry, entry.Record.Vm.Exit.Reason));
            }
            throw;
        }
    }

    public Task<Vm> PauseAsync(string id, CancellationToken ct) =>
        SimpleCallAsync(id, "pause", VmState.Running, new WorkerRequest { Pause = new Proto.Worker.Empty() }, ct);

    public Task<Vm> ResumeAsync(string id, CancellationToken ct) =>
        SimpleCallAsync(id, "resume", VmState.Paused, new WorkerRequest { Resume = new Proto.Worker.Empty() }, ct);

    private async Task<Vm> SimpleCallAsync(string id, string verb, VmState required, WorkerRequest request, CancellationToken ct)
    {
        var entry = Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfDeleted(entry);
            var session = RequireSession(entry, verb, required);
            Apply(entry, session, await session.Client.CallAsync(request, ct).ConfigureAwait(false));
            return Snapshot(entry);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    public async Task<Vm> StopAsync(string id, int graceSeconds, bool force, CancellationToken ct)
    {
        SpecValidator.ValidateGrace(graceSeconds, "grace_period_seconds");
        var entry = Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfDeleted(entry);
            var session = RequireSession(entry, "stop", VmState.Running, VmState.Paused);
            var grace = graceSeconds > 0 ? TimeSpan.FromSeconds(graceSeconds) : _options.DefaultStopGrace;
            bool viaAgent;
            lock (entry.Gate)
            {
                // A paused guest cannot answer its agent: it is stopped by force at once, as before.
                viaAgent = !force && entry.Record.Vm.AgentReady && entry.Record.Vm.State == VmState.Running;
                entry.Record.Vm.State = VmState.Stopping;
                Persist(entry);
                Events.Publish(Event(EventType.StateChanged, entry, force ? "stopping by force" : $"stopping (grace period {grace.TotalSeconds:F0} s)"));
            }
            if (viaAgent && await TryAgentShutdownAsync(entry, grace, ct).ConfigureAwait(false))
                return Snapshot(entry);
            WorkerStatus status;
            try
            {
                status = await session.Client.CallAsync(new WorkerRequest { Stop = new StopMachine { Force = force, GraceMs = (int)grace.TotalMilliseconds } }, ct).ConfigureAwait(false);
            }
            catch (VmApiException e) when (e.Kind == VmErrorKind.WrongState)
            {
                // The guest ended on its own just before: that is the outcome asked for.
                status = await session.Client.CallAsync(new WorkerRequest { Status = new Proto.Worker.Empty() }, ct).ConfigureAwait(false);
                if (status.State != MachineState.Exited) throw;
            }
            Apply(entry, session, status);
            return Snapshot(entry);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    public async Task DeleteAsync(string id, bool force, CancellationToken ct)
    {
        var entry = Find(id);
        await entry.Op.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfDeleted(entry);
            VmState state;
            lock (entry.Gate) state = entry.Record.Vm.State;
            if (!force && state is VmState.Running or VmState.Paused or VmState.Stopping)
                throw WrongState(entry, "delete", " (stop it first, or delete with force)");
            // From here on the deletion completes whatever the caller does: a half-deleted VM is worse than a late reply.
            await RetireSessionAsync(entry).ConfigureAwait(false);
            lock (entry.Gate) entry.Deleted = true;
            TryDeleteDirectory(entry.Dir);
            _vms.TryRemove(new KeyValuePair<string, VmEntry>(id, entry));
            Events.Publish(new VmEvent { Type = EventType.Deleted, Id = id, Time = Now(), Message = "deleted" });
            Log.Deleted(_logger, id);
        }
        finally
        {
            entry.Op.Release();
        }
    }

    // ---------------------------------------------------------------- queries

    public Vm Get(string id) => Snapshot(Find(id));

    public IReadOnlyList<Vm> List(IReadOnlyDictionary<string, string>? selector = null, IReadOnlyCollection<VmState>? states = null)
    {
        var result = new List<Vm>();
        foreach (var entry in _vms.Values)
        {
            var vm = Snapshot(entry);
            if (vm.State == VmState.Unspecified) continue;
            if (selector is not null && selector.Any(kv => !vm.Labels.TryGetValue(kv.Key, out var v) || v != kv.Value)) continue;
            if (states is { Count: > 0 } && !states.Contains(vm.State)) continue;
            result.Add(vm);
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return result;
    }

    /// <summary>Events of one VM (id) or all (null), optionally after a SNAPSHOT event per VM; until cancelled.</summary>
    public async IAsyncEnumerable<VmEvent> WatchAsync(string? id, bool snapshot, [EnumeratorCancellation] CancellationToken ct)
    {
        if (id is not null) Find(id);
        using var watcher = Events.Subscribe(id); // before the snapshot, so no change falls between the two
        if (snapshot)
        {
            foreach (var vm in id is null ? List() : [Get(id)])
                yield return new VmEvent { Type = EventType.Snapshot, Id = vm.Id, State = vm.State, Exit = vm.Exit, BootTimeMs = vm.BootTimeMs, Time = Now(), Message = "current state" };
        }
        await foreach (var ev in watcher.ReadAllAsync(ct).ConfigureAwait(false))
            yield return ev;
    }

    /// <summary>A console session with the VM's worker.</summary>
    public async Task<WorkerConsole> AttachConsoleAsync(string id, bool replay, CancellationToken ct)
    {
        var entry = Find(id);
        WorkerSession? session;
        lock (entry.Gate) session = entry.Session;
        if (session is null) throw WrongState(entry, "attach to the console of", " (it has no live worker)");
        return await session.Client.AttachConsoleAsync(replay, ct).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- workers

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
            string reason;
            try { reason = await session.Process.Exited.WaitAsync(ExitWait).ConfigureAwait(false); }
            catch (TimeoutException)
            {
                session.Process.Kill();
                reason = $"worker process {session.Process.Pid} stopped answering and was killed";
            }
            OnWorkerDied(entry, session, reason);
        });
    }

    private void OnWorkerDied(VmEntry entry, WorkerSession session, string reason)
    {
        lock (entry.Gate)
        {
            if (entry.Session != session || entry.Deleted) return;
            entry.Session = null;
            entry.Record.Worker = null;
            var vm = entry.Record.Vm;
            vm.WorkerPid = 0;
            if (vm.State is not (VmState.Stopped or VmState.Failed))
            {
                vm.State = VmState.Failed;
                vm.Exit = ExitInfo(ExitKind.WorkerDied, reason, clean: false);
                Events.Publish(Event(EventType.Exited, entry, reason));
                Events.Publish(Event(EventType.StateChanged, entry, reason));
            }
            Persist(entry);
        }
        Log.WorkerDied(_logger, entry.Id, reason);
        TryDelete(session.Process.SocketPath);
        ReleaseVsock(entry, session);
        _ = session.Client.DisposeAsync().AsTask();
    }

    /// <summary>Shuts the VM's worker down (asking first, then SIGKILL) and waits until it is gone. Never throws.</summary>
    private async Task RetireSessionAsync(VmEntry entry)
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
            Apply(entry, session, await session.Client.CallAsync(new WorkerRequest { Shutdown = new Proto.Worker.Empty() }, timeout.Token).ConfigureAwait(false));
        }
        catch (Exception e) when (e is VmApiException or OperationCanceledException or InvalidOperationException)
        {
            Log.ShutdownRefused(_logger, entry.Id, e.Message);
        }
        if (!await WaitExitedAsync(session.Process).ConfigureAwait(false))
        {
            session.Process.Kill();
            if (!await WaitExitedAsync(session.Process).ConfigureAwait(false))
                Log.WorkerWouldNotDie(_logger, entry.Id, session.Process.Pid);
        }
        await session.Cts.CancelAsync().ConfigureAwait(false);
        await session.Client.DisposeAsync().ConfigureAwait(false);
        if (session.Monitor is { } monitor) await Task.WhenAny(monitor, Task.Delay(ExitWait)).ConfigureAwait(false);
        lock (entry.Gate)
        {
            if (entry.Session == session)
            {
                entry.Session = null;
                entry.Record.Worker = null;
                entry.Record.Vm.WorkerPid = 0;
                if (!entry.Deleted) Persist(entry);
            }
        }
        TryDelete(session.Process.SocketPath);
        ReleaseVsock(entry, session);
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

    /// <summary>Applies a worker status (from an event or a reply) once, in the worker's order, and publishes what changed.</summary>
    private void Apply(VmEntry entry, WorkerSession session, WorkerStatus status)
    {
        lock (entry.Gate)
        {
            if (entry.Session != session || entry.Deleted) return;
            if (session.Applied && status.Seq < session.LastSeq) return;
            session.Applied = true;
            session.LastSeq = status.Seq;
            var vm = entry.Record.Vm;
            bool changed = false;
            if (status.BootTimeMs > 0 && vm.BootTimeMs == 0)
            {
                vm.BootTimeMs = status.BootTimeMs;
                changed = true;
                Events.Publish(new VmEvent { Type = EventType.BootDone, Id = entry.Id, State = vm.State, BootTimeMs = status.BootTimeMs, Time = Now(), Message = $"boot done after {status.BootTimeMs:F1} ms" });
            }
            if (status.State == MachineState.Exited && !session.ExitSeen)
            {
                session.ExitSeen = true;
                vm.Exit = ExitInfo(WorkerClient.ToApi(status.ExitKind), status.ExitReason, status.ExitClean);
                changed = true;
            }
            var next = status.State switch
            {
                MachineState.Created => VmState.Created,
                MachineState.Running => VmState.Running,
                MachineState.Paused => VmState.Paused,
                MachineState.Stopping => VmState.Stopping,
                MachineState.Exited => status.ExitClean ? VmState.Stopped : VmState.Failed,
                _ => vm.State,
            };
            if (next == VmState.Running && vm.StartedAt is null) vm.StartedAt = Now();
            // A guest can end before the worker's RUNNING status is applied (that status is then older
            // than the exit). Anything but a host stop means the vCPUs ran: say so first, in order.
            if (next is VmState.Stopped or VmState.Failed && vm.State == VmState.Created && entry.Announced
                && status.ExitKind != MachineExitKind.Stopped)
            {
                vm.State = VmState.Running;
                vm.StartedAt ??= Now();
                Events.Publish(Event(EventType.StateChanged, entry, $"now {Describe(VmState.Running)}"));
            }
            if (next != vm.State)
            {
                vm.State = next;
                changed = true;
                if (next is VmState.Stopped or VmState.Failed)
                {
                    vm.AgentReady = false;
                    Events.Publish(Event(EventType.Exited, entry, vm.Exit?.Reason ?? ""));
                }
                // While the first create runs, its outcome is announced by the CREATED event alone.
                if (entry.Announced) Events.Publish(Event(EventType.StateChanged, entry, $"now {Describe(next)}"));
            }
            if (changed) Persist(entry);
        }
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Undoes a create or restore that failed: nothing half-created stays (the worker, its files and the id all go).</summary>
    private async Task AbandonAsync(string id, VmEntry entry)
    {
        await RetireSessionAsync(entry).ConfigureAwait(false);
        lock (entry.Gate) entry.Deleted = true;
        TryDeleteDirectory(entry.Dir);
        _vms.TryRemove(new KeyValuePair<string, VmEntry>(id, entry));
    }

    private VmEntry Find(string id)
    {
        SpecValidator.ValidateId(id);
        if (!_vms.TryGetValue(id, out var entry)) throw VmApiException.NotFound(id);
        ThrowIfDeleted(entry);
        return entry;
    }

    private static void ThrowIfDeleted(VmEntry entry)
    {
        lock (entry.Gate)
            if (entry.Deleted) throw VmApiException.NotFound(entry.Id);
    }

    private static WorkerSession RequireSession(VmEntry entry, string verb, params VmState[] allowed)
    {
        lock (entry.Gate)
        {
            if (!allowed.Contains(entry.Record.Vm.State) || entry.Session is null)
                throw WrongStateLocked(entry, verb, "");
            return entry.Session;
        }
    }

    private static VmApiException WrongState(VmEntry entry, string verb, string hint)
    {
        lock (entry.Gate) return WrongStateLocked(entry, verb, hint);
    }

    private static VmApiException WrongStateLocked(VmEntry entry, string verb, string hint) =>
        VmApiException.WrongState($"cannot {verb} VM '{entry.Id}': it is {Describe(entry.Record.Vm.State)}{hint}");

    public static string Describe(VmState s) => s switch
    {
        VmState.Creating => "being created",
        VmState.Created => "created and not started",
        VmState.Running => "running",
        VmState.Paused => "paused",
        VmState.Stopping => "stopping",
        VmState.Stopped => "stopped",
        VmState.Failed => "failed",
        _ => "in an unknown state",
    };

    private static Vm Snapshot(VmEntry entry)
    {
        lock (entry.Gate) return entry.Record.Vm.Clone();
    }

    private static VmEvent Event(EventType type, VmEntry entry, string message)
    {
        var vm = entry.Record.Vm;
        return new VmEvent { Type = type, Id = entry.Id, State = vm.State, Exit = type == EventType.Exited ? vm.Exit?.Clone() : null, Time = Now(), Message = message };
    }

    private static Timestamp Now() => Timestamp.FromDateTime(DateTime.UtcNow);

    private static VmExitInfo ExitInfo(ExitKind kind, string reason, bool clean) => new() { Kind = kind, Reason = reason, Clean = clean, Time = Now() };

    /// <summary>Under the entry's state lock: writes vm.pb atomically (temporary file, then rename).</summary>
    private void Persist(VmEntry entry)
    {
        if (entry.Deleted) return;
        string path = Path.Combine(entry.Dir, "vm.pb"), temp = path + ".tmp";
        try
        {
            File.WriteAllBytes(temp, entry.Record.ToByteArray());
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.PersistFailed(_logger, path, e.Message);
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private void TryDeleteDirectory(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Log.PersistFailed(_logger, dir, e.Message); }
    }

    /// <summary>
    /// Lets go of the workers (they keep running for the next daemon to adopt) or, with
    /// <see cref="DaemonOptions.StopVmsOnShutdown"/>, shuts them down. Ends every watcher.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        lock (_admission)
        {
            if (_disposed) return;
            _disposed = true;
        }
        foreach (var entry in _vms.Values)
        {
            if (_options.StopVmsOnShutdown)
            {
                await RetireSessionAsync(entry).ConfigureAwait(false);
                continue;
            }
            WorkerSession? session;
            lock (entry.Gate) session = entry.Session;
            if (session is null) continue;
            await session.Cts.CancelAsync().ConfigureAwait(false);
            await session.Client.DisposeAsync().ConfigureAwait(false);
        }
        Events.CompleteAll();
    }

    private sealed class VmEntry(string id, string dir)
    {
        public string Id { get; } = id;
        public string Dir { get; } = dir;
        public SemaphoreSlim Op { get; } = new(1, 1);
        public Lock Gate { get; } = new();
        public required VmRecord Record { get; set; }
        public WorkerSession? Session { get; set; }
        public bool Deleted { get; set; }
        public bool Announced { get; set; } = true;
    }

    private sealed class WorkerSession(WorkerProcess process, WorkerClient client)
    {
        public WorkerProcess Process { get; } = process;
        public WorkerClient Client { get; } = client;
        public CancellationTokenSource Cts { get; } = new();
        public Task? Monitor { get; set; }
        public bool ExpectedExit { get; set; }
        public bool Applied { get; set; }
        public ulong LastSeq { get; set; }
        public bool ExitSeen { get; set; }
        /// <summary>Waits for the guest agent's ready report (spec.agent), until the session ends.</summary>
        public FireSharp.Daemon.Agent.AgentReadyListener? ReadyListener { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "VM {Id} created ({MemMib} MiB, {Vcpus} vCPU)")]
        public static partial void Created(ILogger logger, string id, long memMib, int vcpus);

        [LoggerMessage(2, LogLevel.Information, "VM {Id} deleted")]
        public static partial void Deleted(ILogger logger, string id);

        [LoggerMessage(3, LogLevel.Warning, "VM {Id}: {Reason}")]
        public static partial void WorkerDied(ILogger logger, string id, string reason);

        [LoggerMessage(4, LogLevel.Information, "VM {Id}: adopted worker {Pid} ({State})")]
        public static partial void Adopted(ILogger logger, string id, int pid, VmState state);

        [LoggerMessage(5, LogLevel.Warning, "VM {Id}: worker {Pid} is alive but does not answer ({Error}); killed it")]
        public static partial void AdoptFailed(ILogger logger, string id, int pid, string error);

        [LoggerMessage(6, LogLevel.Information, "VM {Id}: its worker is gone; marked as such")]
        public static partial void Reaped(ILogger logger, string id);

        [LoggerMessage(7, LogLevel.Warning, "removed {Dir}: a VM create that never finished")]
        public static partial void RemovedHalfCreated(ILogger logger, string dir);

        [LoggerMessage(8, LogLevel.Error, "cannot read {Path}: {Error}; the VM is left out until the file is fixed or removed")]
        public static partial void CorruptRecord(ILogger logger, string path, string error);

        [LoggerMessage(9, LogLevel.Error, "cannot write {Path}: {Error}")]
        public static partial void PersistFailed(ILogger logger, string path, string error);

        [LoggerMessage(10, LogLevel.Warning, "VM {Id}: the worker did not shut down cleanly ({Error}); killing it")]
        public static partial void ShutdownRefused(ILogger logger, string id, string error);

        [LoggerMessage(11, LogLevel.Error, "VM {Id}: worker {Pid} did not die after SIGKILL")]
        public static partial void WorkerWouldNotDie(ILogger logger, string id, int pid);
    }
}
