using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Pool;

/// <summary>
/// A warm pool of function VMs: a registry of functions and, per function version, warm VMs (idle or busy with
/// exactly one invocation). Admission follows the concurrency ledger (account limit, reserved and unreserved
/// concurrency), provisioned concurrency is kept filled, idle VMs are reaped, Event invocations are queued and
/// retried. This class is the registry and the entry point; the work is done by its parts: <see cref="Invoker"/>
/// (one invocation), <see cref="VmKeeper"/> (VMs between invocations), <see cref="EventQueue"/> (Event
/// invocations), all sharing one <see cref="PoolContext"/>. See README.md.
/// </summary>
public sealed class FunctionPool : IAsyncDisposable
{
    private readonly PoolContext _pool;
    private readonly VmKeeper _vms;
    private readonly Invoker _invoker;
    private readonly EventQueue _events;
    private readonly ITimer _reaper;

    public FunctionPool(IFunctionVmFactory factory, PoolOptions? options = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(factory);
        options ??= new PoolOptions();
        if (options.AccountConcurrencyLimit < 1) throw new ArgumentException("AccountConcurrencyLimit must be ≥ 1", nameof(options));
        if (options.UnreservedMinimum < 0 || options.UnreservedMinimum > options.AccountConcurrencyLimit)
            throw new ArgumentException("UnreservedMinimum must be within [0, AccountConcurrencyLimit]", nameof(options));
        if (options.AsyncQueueCapacity < 1 || options.AsyncWorkers < 1) throw new ArgumentException("async queue and workers must be ≥ 1", nameof(options));
        _pool = new PoolContext(factory, options, logger ?? NullLogger.Instance);
        _vms = new VmKeeper(_pool);
        _invoker = new Invoker(_pool, _vms);
        _events = new EventQueue(_pool, _invoker);
        _reaper = _pool.Time.CreateTimer(_ => _vms.OnReapTimer(), null, options.ReapInterval, options.ReapInterval);
    }

    public PoolOptions Options => _pool.Options;

    // ---------------------------------------------------------------- registry

    /// <summary>
    /// Registers a function. The pool assigns <see cref="FunctionDefinition.Version"/> ("1", then "2" after each
    /// update); the caller's value is ignored. No VM is created until an invocation or provisioned concurrency needs one.
    /// </summary>
    public Task<FunctionInfo> CreateFunctionAsync(FunctionDefinition definition, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(definition);
        cancellationToken.ThrowIfCancellationRequested();
        var def = definition with { Version = "1" };
        FunctionDefinitionRules.Validate(def);
        lock (_pool.Lock)
        {
            _pool.ThrowIfDisposed();
            if (_pool.Functions.TryGetValue(def.Name, out var existing))
                throw existing.State == FunctionState.Deleting ? new FunctionDeletingException(def.Name) : new FunctionExistsException(def.Name);
            var fn = new FunctionEntry(def.Name, _pool.Ledger.Add(null)) { LastModified = _pool.Time.GetUtcNow(), VersionCounter = 1 };
            var ver = new VersionEntry(fn, def);
            fn.Versions.Add(ver);
            fn.Current = ver;
            _pool.Functions.Add(def.Name, fn);
            PoolLog.Created(_pool.Logger, def.Name, def.Version);
            return Task.FromResult(InfoLocked(fn));
        }
    }

    /// <summary>Applies a configuration change as a new version; the old version drains (see <see cref="UpdateFunctionAsync"/>).</summary>
    public Task<FunctionInfo> UpdateFunctionConfigurationAsync(string name, FunctionConfigurationUpdate update, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(update);
        return UpdateFunctionAsync(name, d => d with
        {
            Handler = update.Handler ?? d.Handler,
            MemoryMib = update.MemoryMib ?? d.MemoryMib,
            Vcpus = update.Vcpus ?? d.Vcpus,
            Timeout = update.Timeout ?? d.Timeout,
            Environment = update.Environment ?? d.Environment,
            LayerPaths = update.LayerPaths ?? d.LayerPaths,
            KernelPath = update.KernelPath ?? d.KernelPath,
            RootfsPath = update.RootfsPath ?? d.RootfsPath,
            SnapshotStart = update.SnapshotStart ?? d.SnapshotStart,
        }, cancellationToken);
    }

    /// <summary>Points the function at a new code image as a new version; the old version drains.</summary>
    public Task<FunctionInfo> UpdateFunctionCodeAsync(string name, string codeImagePath, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(codeImagePath);
        return UpdateFunctionAsync(name, d => d with { CodeImagePath = codeImagePath }, cancellationToken);
    }

    /// <summary>
    /// Makes a new version from <paramref name="change"/> (a pure function of the current definition; it runs under
    /// the pool's lock; Name and Version of its result are ignored). New invocations use the new version at once.
    /// Idle VMs of older versions are shut down now, busy ones when their invocation ends; once no older version has
    /// a VM left, their snapshots are discarded. Returns without waiting for the drain.
    /// </summary>
    public Task<FunctionInfo> UpdateFunctionAsync(string name, Func<FunctionDefinition, FunctionDefinition> change, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(change);
        cancellationToken.ThrowIfCancellationRequested();
        var deferred = new Deferred();
        FunctionInfo info;
        lock (_pool.Lock)
        {
            _pool.ThrowIfDisposed();
            var fn = _pool.GetLiveLocked(name);
            var def = change(fn.Current.Definition) with { Name = fn.Name, Version = (fn.VersionCounter + 1).ToString(System.Globalization.CultureInfo.InvariantCulture) };
            FunctionDefinitionRules.Validate(def);
            fn.VersionCounter++;
            var old = fn.Current;
            old.Draining = true;
            foreach (var vm in old.Idle) _vms.StopLocked(vm, graceful: true, "function updated", deferred);
            old.Idle.Clear();
            var ver = new VersionEntry(fn, def);
            fn.Versions.Add(ver);
            fn.Current = ver;
            fn.LastModified = _pool.Time.GetUtcNow();
            _vms.CheckDrainedLocked(old, deferred);
            _vms.EnsureProvisionedLocked(fn, deferred);
            PoolLog.Updated(_pool.Logger, name, def.Version);
            info = InfoLocked(fn);
        }
        deferred.Run(_pool.Background);
        return Task.FromResult(info);
    }

    /// <summary>
    /// Deletes the function: from now on invocations get <see cref="FunctionDeletingException"/>; idle VMs are shut
    /// down, busy ones when their invocation ends; then its snapshots are discarded and the name is freed (invocations
    /// then get <see cref="FunctionNotFoundException"/>). Completes when all that is done; cancelling only stops the wait.
    /// </summary>
    public async Task DeleteFunctionAsync(string name, CancellationToken cancellationToken = default)
    {
        var deferred = new Deferred();
        Task done;
        lock (_pool.Lock)
        {
            if (!_pool.Functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
            if (fn.Deleted is null)
            {
                fn.State = FunctionState.Deleting;
                fn.Deleted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                fn.Provisioned = 0;
                foreach (var ver in fn.Versions.ToList())
                {
                    ver.Draining = true;
                    foreach (var vm in ver.Idle) _vms.StopLocked(vm, graceful: true, "function deleted", deferred);
                    ver.Idle.Clear();
                    _vms.CheckDrainedLocked(ver, deferred);
                }
                if (fn.Versions.Count == 0) _vms.FinishDeleteLocked(fn, deferred);
                PoolLog.Deleting(_pool.Logger, name);
            }
            done = fn.Deleted.Task;
        }
        deferred.Run(_pool.Background);
        await done.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public FunctionInfo GetFunction(string name)
    {
        lock (_pool.Lock)
        {
            if (!_pool.Functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
            return InfoLocked(fn);
        }
    }

    /// <summary>All functions (including ones being deleted), ordered by name.</summary>
    public IReadOnlyList<FunctionInfo> ListFunctions()
    {
        lock (_pool.Lock)
            return _pool.Functions.Values.OrderBy(f => f.Name, StringComparer.Ordinal).Select(InfoLocked).ToList();
    }

    /// <summary>
    /// Sets (or with null removes) the function's reserved concurrency. The sum of reservations may not exceed the
    /// account limit minus the unreserved minimum; 0 throttles every invocation. Must be ≥ provisioned concurrency.
    /// </summary>
    public FunctionInfo PutReservedConcurrency(string name, int? reservedConcurrency)
    {
        lock (_pool.Lock)
        {
            _pool.ThrowIfDisposed();
            var fn = _pool.GetLiveLocked(name);
            if (reservedConcurrency is int r && r < fn.Provisioned)
                throw new InvalidFunctionRequestException("ReservedConcurrency",
                    $"{r} is below the function's provisioned concurrency of {fn.Provisioned}");
            _pool.Ledger.SetReserved(fn.Slot, reservedConcurrency);
            fn.LastModified = _pool.Time.GetUtcNow();
            return InfoLocked(fn);
        }
    }

    /// <summary>
    /// Sets how many initialized VMs of the current version the pool keeps ready (0 = none). At most the reserved
    /// concurrency when there is one, else at most the unreserved pool. The VMs are created in the background, and
    /// replaced when they are recycled or fail.
    /// </summary>
    public FunctionInfo PutProvisionedConcurrency(string name, int provisionedConcurrency)
    {
        var deferred = new Deferred();
        FunctionInfo info;
        lock (_pool.Lock)
        {
            _pool.ThrowIfDisposed();
            var fn = _pool.GetLiveLocked(name);
            if (provisionedConcurrency < 0)
                throw new InvalidFunctionRequestException("ProvisionedConcurrency", "must be ≥ 0");
            int max = fn.Slot.Reserved ?? _pool.Ledger.UnreservedLimit;
            if (provisionedConcurrency > max)
                throw new InvalidFunctionRequestException("ProvisionedConcurrency", fn.Slot.Reserved is null
                    ? $"{provisionedConcurrency} exceeds the unreserved account concurrency of {max}"
                    : $"{provisionedConcurrency} exceeds the function's reserved concurrency of {max}");
            fn.Provisioned = provisionedConcurrency;
            fn.LastModified = _pool.Time.GetUtcNow();
            _vms.EnsureProvisionedLocked(fn, deferred);
            info = InfoLocked(fn);
        }
        deferred.Run(_pool.Background);
        return info;
    }

    public AccountSettings GetAccountSettings()
    {
        lock (_pool.Lock)
        {
            return new AccountSettings
            {
                ConcurrencyLimit = _pool.Ledger.AccountLimit,
                UnreservedMinimum = _pool.Ledger.UnreservedMinimum,
                TotalReserved = _pool.Ledger.TotalReserved,
                UnreservedConcurrency = _pool.Ledger.UnreservedLimit,
                UnreservedAvailable = Math.Max(0, _pool.Ledger.UnreservedLimit - _pool.Ledger.UnreservedInFlight),
                InFlight = _pool.Ledger.TotalInFlight,
                FunctionCount = _pool.Functions.Count,
                AsyncQueued = _events.Queued,
                Invocations = _pool.Totals.Invocations,
                Errors = _pool.Totals.Errors,
                Throttles = _pool.Totals.Throttles,
                GbSeconds = _pool.Totals.GbSeconds,
            };
        }
    }

    // ---------------------------------------------------------------- invoke

    /// <summary>
    /// Invokes a function. RequestResponse runs it and returns its result (function errors, timeouts and init errors
    /// are results with <see cref="InvokeResult.FunctionError"/> set, not exceptions). Event validates, queues and
    /// returns <see cref="InvokeStatus.Queued"/> at once (see <see cref="GetAsyncInvocation"/>). DryRun only validates.
    /// </summary>
    /// <exception cref="FunctionNotFoundException"/>
    /// <exception cref="FunctionDeletingException"/>
    /// <exception cref="FunctionThrottledException">a concurrency limit or the Event queue is full; nothing ran.</exception>
    /// <exception cref="RequestTooLargeException"/>
    /// <exception cref="OperationCanceledException">the caller cancelled: a running invocation is abandoned and its VM recycled.</exception>
    /// <exception cref="ObjectDisposedException"/>
    public Task<InvokeResult> InvokeAsync(string name, ReadOnlyMemory<byte> payload,
        InvocationType invocationType = InvocationType.RequestResponse, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        switch (invocationType)
        {
            case InvocationType.Event:
                return Task.FromResult(_events.Enqueue(name, payload));
            case InvocationType.DryRun:
                _invoker.CheckPayload(payload, InvocationType.DryRun);
                lock (_pool.Lock)
                {
                    _pool.ThrowIfDisposed();
                    _pool.GetLiveLocked(name);
                }
                return Task.FromResult(new InvokeResult { RequestId = Invoker.NewRequestId(), Status = InvokeStatus.Validated });
            case InvocationType.RequestResponse:
                _invoker.CheckPayload(payload, InvocationType.RequestResponse);
                return _invoker.RunAsync(name, payload, Invoker.NewRequestId(), cancellationToken);
            default:
                throw new InvalidFunctionRequestException("InvocationType", $"unknown invocation type {invocationType}");
        }
    }

    /// <summary>The state of an Event invocation: queued, running, waiting to retry, or finished (the last <see cref="PoolOptions.AsyncHistory"/>).</summary>
    public AsyncInvocationRecord? GetAsyncInvocation(string requestId) => _events.Get(requestId);

    /// <summary>Completes when the Event invocation succeeded or failed its last attempt.</summary>
    /// <exception cref="KeyNotFoundException">no such request id (or it aged out of the history).</exception>
    public Task<AsyncInvocationRecord> WaitForAsyncInvocationAsync(string requestId, CancellationToken cancellationToken = default) =>
        _events.WaitAsync(requestId, cancellationToken);

    // ---------------------------------------------------------------- helpers

    private FunctionInfo InfoLocked(FunctionEntry fn)
    {
        int idle = 0, busy = 0, creating = 0, draining = 0, provisionedReady = 0;
        foreach (var v in fn.Versions)
        {
            idle += v.Idle.Count;
            busy += v.Busy.Count;
            creating += v.CreatingForInvoke + v.CreatingProvisioned;
            if (v != fn.Current || v.Draining) draining += v.Idle.Count + v.Busy.Count + v.Stopping;
        }
        if (!fn.Current.Draining) provisionedReady = fn.Current.ProvisionedCount();
        return new FunctionInfo
        {
            Definition = fn.Current.Definition,
            State = fn.State,
            ReservedConcurrency = fn.Slot.Reserved,
            ProvisionedConcurrency = fn.Provisioned,
            LastModified = fn.LastModified,
            Stats = fn.Stats.Snapshot(fn.Slot.InFlight, idle, busy, creating, provisionedReady, draining),
        };
    }

    /// <summary>Waits until no background work (VM shutdowns, provisioning, retries, snapshot discards) is left.</summary>
    internal Task QuiesceAsync() => _pool.Background.QuiesceAsync();

    /// <summary>What the reaper's timer does: shuts down idle on-demand VMs older than <see cref="PoolOptions.IdleTtl"/>.</summary>
    internal Task<int> ReapIdleAsync() => _vms.ReapIdleAsync();

    public async ValueTask DisposeAsync()
    {
        var deferred = new Deferred();
        lock (_pool.Lock)
        {
            if (_pool.Disposed) return;
            _pool.Disposed = true;
            foreach (var fn in _pool.Functions.Values)
            {
                fn.Provisioned = 0;
                foreach (var ver in fn.Versions)
                {
                    foreach (var vm in ver.Idle) _vms.StopLocked(vm, graceful: true, "pool disposed", deferred);
                    ver.Idle.Clear();
                }
            }
        }
        _reaper.Dispose();
        _events.Close();
        // In-flight invocations, VM creations, retry delays and the async workers all observe this.
        await _pool.StopAsync().ConfigureAwait(false);
        deferred.Run(_pool.Background);
        await _events.DrainAsync().ConfigureAwait(false);
        await _pool.Background.QuiesceAsync().ConfigureAwait(false);
        PoolLog.Disposed(_pool.Logger);
    }
}
