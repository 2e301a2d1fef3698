using System.Runtime.CompilerServices;
using FireSharp.Daemon.Isolation;
using FireSharp.Daemon.Jail;
using FireSharp.Daemon.Workers;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// The daemon's VMs, in the daemon's own terms (<see cref="VmConfig"/>, <see cref="CreateVmCommand"/>,
/// <see cref="VmInfo"/>, ...): the API that the gRPC service (which maps firesharp.v1 to these types) and the
/// function factory call. It puts together, and delegates to:
/// <list type="bullet">
///   <item><see cref="VmRegistry"/> and <see cref="VmRecordStore"/>: the VMs by id and their records on disk;</item>
///   <item><see cref="VmAdmission"/>: the daemon's VM count and memory budget;</item>
///   <item><see cref="WorkerSupervisor"/>: each VM's worker process, its events and its death;</item>
///   <item><see cref="VmLifecycle"/>: create, start, pause, resume, stop, delete;</item>
///   <item><see cref="GuestAgents"/>: agent readiness, Exec and the graceful stop;</item>
///   <item><see cref="GuestFiles"/>: files copied into and out of the guest through its agent;</item>
///   <item><see cref="VmSnapshots"/>: snapshots taken in the worker, restores into a new VM.</item>
/// </list>
/// Every failure leaves as a <see cref="VmApiException"/>.
/// </summary>
/// <remarks>
/// On disk: <c>&lt;StateDir&gt;/vms/&lt;id&gt;/</c> holds <c>vm.pb</c> (the record), <c>worker.sock</c>,
/// <c>worker.log</c> and <c>console.log</c> (and their rotated <c>.1</c> files: see <see cref="WorkerLogs"/>). A directory without <c>vm.pb</c>, or with a record still CREATING, is a create that
/// did not finish, and is removed at start-up.
/// </remarks>
public sealed class VmManager : IAsyncDisposable
{
    private readonly DaemonOptions _options;
    private readonly ILogger _logger;
    private readonly VmRegistry _registry;
    private readonly VmAdmission _admission;
    private readonly WorkerSupervisor _supervisor;
    private readonly GuestAgents _agents;
    private readonly GuestFiles _files;
    private readonly VmLifecycle _lifecycle;
    private readonly VmSnapshots _snapshots;
    private readonly VmJails _jails;
    private readonly DriveLocks _locks;
    private readonly VmCgroups _cgroups;
    private readonly Metrics.VmMetrics? _metrics;

    /// <param name="metrics">Where creates, restores, failures and boot times are counted; null: nowhere.</param>
    /// <param name="loggers">Where the workers' own log lines are logged again (under their categories); null: nowhere.</param>
    public VmManager(DaemonOptions options, IWorkerLauncher launcher, HostLimits host, ILogger<VmManager> logger, Metrics.VmMetrics? metrics = null,
        ILoggerFactory? loggers = null)
    {
        _options = options;
        _logger = logger;
        _registry = new VmRegistry(options, new VmRecordStore(logger));
        _admission = new VmAdmission(options, host, _registry);
        _agents = new GuestAgents(options, _registry, Events, logger);
        _files = new GuestFiles(_agents);
        var keys = new DaemonSnapshotKeys(options);
        _jails = new VmJails(options, _registry, keys, logger);
        _cgroups = new VmCgroups(options, logger);
        _supervisor = new WorkerSupervisor(options, launcher, _cgroups, _registry, Events, _agents, _jails, keys, logger, loggers);
        var paths = new HostPaths(options);
        _locks = new DriveLocks(paths);
        _lifecycle = new VmLifecycle(options, host, _registry, _admission, _supervisor, _cgroups, _agents, _jails, Events, paths, _locks, logger);
        _snapshots = new VmSnapshots(options, _registry, _lifecycle, _supervisor, _agents, _jails, paths, keys);
        _metrics = metrics;
        if (metrics is not null)
        {
            Events.Observer = metrics.OnEvent;
            metrics.Observe(this);
        }
    }

    /// <summary>Every VM's lifecycle events.</summary>
    public EventHub Events { get; } = new();

    public DaemonOptions Options => _options;

    /// <summary>The per-VM cgroups in use (null when off): for tests and diagnostics.</summary>
    internal CgroupHierarchy? Cgroups => _cgroups.Hierarchy;

    /// <summary>
    /// Loads the state directory: re-adopts live workers, marks VMs whose worker is gone as FAILED, removes
    /// half-created VMs, and reaps the cgroups no live VM owns. With Cgroups=Required, a cgroup file system it
    /// cannot use throws <see cref="CgroupException"/>.
    /// </summary>
    public async Task InitializeAsync(CancellationToken ct)
    {
        _cgroups.Initialize();
        // Worker sockets and logs live here: only the daemon's user gets in.
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(_options.VmsDir);
        else Directory.CreateDirectory(_options.VmsDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        // The daemon's snapshot key is made at its first start, in the state dir (see docs/security.md).
        _ = new DaemonSnapshotKeys(_options).Current;
        foreach (var stored in await _registry.Store.LoadAllAsync(_options.VmsDir, ct).ConfigureAwait(false))
        {
            if (stored.HalfCreated)
            {
                // A create that never finished: its worker (if any) and files go.
                _supervisor.KillOrphan(stored.Worker);
                VmLog.RemovedHalfCreated(_logger, stored.Dir);
                _registry.Store.DeleteDirectory(stored.Dir);
                continue;
            }
            var entry = new VmEntry(stored.Id, stored.Dir) { Vm = stored.Vm!, Worker = stored.Worker, RestoredFrom = stored.RestoredFrom, Jail = stored.Jail };
            _registry.Add(entry);
            try
            {
                _locks.Acquire(entry.Id, entry.Vm.Spec, i => $"spec.drives[{i}].path"); // held again for as long as the VM exists
            }
            catch (VmApiException e)
            {
                VmLog.DriveLockLost(_logger, entry.Id, e.Message);
            }
            await _supervisor.AdoptOrReapAsync(entry, ct).ConfigureAwait(false);
        }
        // Jail and run directories of VMs that are gone (deleted while the daemon was down, half-created).
        _jails.ReapOrphans(_registry.Entries.Select(e => e.Id).ToHashSet(StringComparer.Ordinal));
        await _cgroups.ReapAsync(HasLiveWorker).ConfigureAwait(false);
    }

    private bool HasLiveWorker(string id)
    {
        if (!_registry.TryFind(id, out var entry)) return false;
        lock (entry.Gate) return entry.Session is not null;
    }

    // ---------------------------------------------------------------- lifecycle

    public async Task<VmInfo> CreateAsync(CreateVmCommand command, CancellationToken ct)
    {
        try
        {
            var vm = await _lifecycle.CreateAsync(command, ct).ConfigureAwait(false);
            _metrics?.Created();
            return vm;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _metrics?.Failed("create", e);
            throw;
        }
    }

    public Task<VmInfo> StartAsync(string id, CancellationToken ct) => _lifecycle.StartAsync(id, ct);

    public Task<VmInfo> PauseAsync(string id, CancellationToken ct) => _lifecycle.PauseAsync(id, ct);

    public Task<VmInfo> ResumeAsync(string id, CancellationToken ct) => _lifecycle.ResumeAsync(id, ct);

    /// <summary>Stops the VM; <paramref name="graceSeconds"/> 0 means the daemon's default grace period.</summary>
    public Task<VmInfo> StopAsync(string id, int graceSeconds, bool force, CancellationToken ct) => _lifecycle.StopAsync(id, graceSeconds, force, ct);

    public Task DeleteAsync(string id, bool force, CancellationToken ct) => _lifecycle.DeleteAsync(id, force, ct);

    /// <summary>Changes a live VM's CPU quota (its cgroup's); 0 means the default, vCPUs + 1.</summary>
    public Task<VmInfo> SetCpuQuotaAsync(string id, int millicpus, CancellationToken ct) => _lifecycle.SetCpuQuotaAsync(id, millicpus, ct);

    /// <summary>Replaces rate limiters of a VM with a live worker (see UpdateRateLimiters in vm.proto).</summary>
    public Task<VmInfo> UpdateRateLimitersAsync(UpdateRateLimitersCommand command, CancellationToken ct) => _lifecycle.UpdateRateLimitersAsync(command, ct);

    // ---------------------------------------------------------------- snapshots and the guest agent

    /// <summary>Snapshots a RUNNING or PAUSED VM (see CreateSnapshot in vm.proto).</summary>
    public Task<VmSnapshotInfo> CreateSnapshotAsync(SnapshotVmCommand command, CancellationToken ct) => _snapshots.CreateAsync(command, ct);

    /// <summary>Restores a snapshot as a new VM in a new worker (see RestoreVm in vm.proto).</summary>
    public async Task<VmInfo> RestoreAsync(RestoreVmCommand command, CancellationToken ct)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            var vm = await _snapshots.RestoreAsync(command, ct).ConfigureAwait(false);
            _metrics?.Restored(System.Diagnostics.Stopwatch.GetElapsedTime(start));
            return vm;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _metrics?.Failed("restore", e);
            throw;
        }
    }

    /// <summary>The VMs with a worker session now, and the client of each (for the device metrics).</summary>
    internal List<(string Id, WorkerClient Client)> LiveWorkers()
    {
        var live = new List<(string, WorkerClient)>();
        foreach (var entry in _registry.Entries)
            lock (entry.Gate)
                if (entry.Session is { } s && !entry.Deleted) live.Add((entry.Id, s.Client));
        return live;
    }

    /// <summary>Runs a command in the VM through its guest agent.</summary>
    public Task<ExecOutcome> ExecAsync(ExecCommand command, CancellationToken ct)
    {
        SpecValidator.ValidateId(command.Id);
        if (command.Argv.Count == 0 || command.Argv[0].Length == 0) throw VmApiException.Invalid("argv", "argv[0] (the program) is required");
        if (command.TimeoutSeconds < 0) throw VmApiException.Invalid("timeout_seconds", $"is {command.TimeoutSeconds}; must not be negative");
        return _agents.ExecAsync(_registry.Find(command.Id), command, ct);
    }

    /// <summary>Writes a file into the VM through its guest agent, from <paramref name="data"/> in pieces of any size; returns its size.</summary>
    public Task<long> CopyInAsync(CopyInCommand command, IAsyncEnumerable<ReadOnlyMemory<byte>> data, CancellationToken ct)
    {
        SpecValidator.ValidateId(command.Id);
        return _files.CopyInAsync(_registry.Find(command.Id), command, data, ct);
    }

    /// <summary>Reads a file of the VM through its guest agent, in chunks of at most 1 MiB.</summary>
    public IAsyncEnumerable<Agent.GuestFileChunk> CopyOutAsync(string id, string path, CancellationToken ct)
    {
        SpecValidator.ValidateId(id);
        return _files.CopyOutAsync(_registry.Find(id), path, ct);
    }

    /// <summary>The VM's hybrid vsock socket on the daemon's host (where its guest agent is reached).</summary>
    public string VsockPath(string id) => _agents.VsockPath(id);

    // ---------------------------------------------------------------- queries

    public VmInfo Get(string id) => _registry.Find(id).Snapshot();

    /// <summary>The VMs with every label of <paramref name="selector"/> and in one of <paramref name="phases"/> (empty: any), by id.</summary>
    public IReadOnlyList<VmInfo> List(IReadOnlyDictionary<string, string>? selector = null, IReadOnlyCollection<VmPhase>? phases = null) =>
        _registry.List(selector, phases);

    /// <summary>
    /// Events of one VM (id) or all (null), optionally after a SNAPSHOT event per VM; until cancelled.
    /// <paramref name="subscribed"/> runs once the watch is subscribed, before any event (the gRPC service sends its
    /// response headers then, so a client knows that a call it makes next cannot be missed).
    /// </summary>
    public async IAsyncEnumerable<VmLifecycleEvent> WatchAsync(string? id, bool snapshot, [EnumeratorCancellation] CancellationToken ct, Func<Task>? subscribed = null)
    {
        if (id is not null) _registry.Find(id);
        using var watcher = Events.Subscribe(id); // before the snapshot, so no change falls between the two
        if (subscribed is not null) await subscribed().ConfigureAwait(false);
        if (snapshot)
        {
            foreach (var vm in id is null ? List() : [Get(id)])
            {
                yield return new VmLifecycleEvent
                {
                    Kind = VmEventKind.Snapshot, Id = vm.Id, Phase = vm.Phase, End = vm.End, BootTimeMs = vm.BootTimeMs, Time = VmEntry.Now(), Message = "current state",
                };
            }
        }
        await foreach (var ev in watcher.ReadAllAsync(ct).ConfigureAwait(false))
            yield return ev;
    }

    /// <summary>A console session with the VM's worker.</summary>
    /// <summary>The VM's kept logs (worker.log, console.log): from its directory, so also after its worker ended.</summary>
    public IAsyncEnumerable<Logs.VmLogPiece> ReadLogsAsync(string id, bool console, bool vmm, bool follow, long tailBytes, CancellationToken ct)
    {
        if (tailBytes < 0) throw VmApiException.Invalid("tail_bytes", "must be 0 (all) or more");
        var entry = _registry.Find(id);
        return Logs.VmLogReader.ReadAsync(entry.Dir, console, vmm, follow, tailBytes, ct);
    }

    public async Task<WorkerConsole> AttachConsoleAsync(string id, bool replay, CancellationToken ct)
    {
        var entry = _registry.Find(id);
        WorkerSession? session;
        lock (entry.Gate) session = entry.Session;
        if (session is null) throw entry.WrongState("attach to the console of", " (it has no live worker)");
        return await session.Client.AttachConsoleAsync(replay, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Lets go of the workers (they keep running for the next daemon to adopt) or, with
    /// <see cref="DaemonOptions.StopVmsOnShutdown"/>, shuts them down. Ends every watcher.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (!_admission.Close()) return;
        foreach (var entry in _registry.Entries)
        {
            if (_options.StopVmsOnShutdown) await _supervisor.RetireAsync(entry).ConfigureAwait(false);
            else await WorkerSupervisor.DetachAsync(entry).ConfigureAwait(false);
        }
        _locks.ReleaseAll();
        Events.CompleteAll();
    }
}
