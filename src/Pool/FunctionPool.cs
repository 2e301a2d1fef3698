using System.Text.RegularExpressions;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Pool;

/// <summary>
/// Lambda's execution model on microVMs: a registry of functions and, per function version, warm VMs (idle or
/// busy with exactly one invocation). Admission follows Lambda's concurrency rules (account limit, reserved and
/// unreserved concurrency), provisioned concurrency is kept filled, idle VMs are reaped, Event invocations are
/// queued and retried. One lock guards all bookkeeping and is never held across an await; VM and factory calls
/// happen outside it. See README.md.
/// </summary>
public sealed partial class FunctionPool : IAsyncDisposable
{
    private readonly IFunctionVmFactory _factory;
    private readonly PoolOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly ConcurrencyLedger _ledger;
    private readonly Dictionary<string, FunctionEntry> _functions = new(StringComparer.Ordinal);
    private readonly HashSet<Task> _background = [];
    private readonly CancellationTokenSource _lifetime = new();
    private readonly Channel<AsyncWork> _queue;
    private readonly Task[] _workers;
    private readonly ITimer _reaper;
    private readonly Totals _totals = new();
    private bool _disposed;

    public FunctionPool(IFunctionVmFactory factory, PoolOptions? options = null, ILogger? logger = null)
    {
        _factory = factory ?? throw new ArgumentNullException(nameof(factory));
        _options = options ?? new PoolOptions();
        if (_options.AccountConcurrencyLimit < 1) throw new ArgumentException("AccountConcurrencyLimit must be ≥ 1", nameof(options));
        if (_options.UnreservedMinimum < 0 || _options.UnreservedMinimum > _options.AccountConcurrencyLimit)
            throw new ArgumentException("UnreservedMinimum must be within [0, AccountConcurrencyLimit]", nameof(options));
        if (_options.AsyncQueueCapacity < 1 || _options.AsyncWorkers < 1) throw new ArgumentException("async queue and workers must be ≥ 1", nameof(options));
        _logger = logger ?? NullLogger.Instance;
        _time = _options.TimeProvider;
        _ledger = new ConcurrencyLedger(_options.AccountConcurrencyLimit, _options.UnreservedMinimum);
        _queue = Channel.CreateBounded<AsyncWork>(new BoundedChannelOptions(_options.AsyncQueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails when full: the caller is throttled
            SingleReader = false,
            SingleWriter = false,
        });
        _workers = new Task[_options.AsyncWorkers];
        for (int i = 0; i < _workers.Length; i++) _workers[i] = Task.Run(AsyncWorkerAsync);
        _reaper = _time.CreateTimer(_ => OnReapTimer(), null, _options.ReapInterval, _options.ReapInterval);
    }

    public PoolOptions Options => _options;

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
        Validate(def);
        lock (_lock)
        {
            ThrowIfDisposed();
            if (_functions.TryGetValue(def.Name, out var existing))
                throw existing.State == FunctionState.Deleting ? new FunctionDeletingException(def.Name) : new FunctionExistsException(def.Name);
            var fn = new FunctionEntry(def.Name, _ledger.Add(null)) { LastModified = _time.GetUtcNow(), VersionCounter = 1 };
            var ver = new VersionEntry(fn, def);
            fn.Versions.Add(ver);
            fn.Current = ver;
            _functions.Add(def.Name, fn);
            PoolLog.Created(_logger, def.Name, def.Version);
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
        lock (_lock)
        {
            ThrowIfDisposed();
            var fn = GetLiveLocked(name);
            var def = change(fn.Current.Definition) with { Name = fn.Name, Version = (fn.VersionCounter + 1).ToString(System.Globalization.CultureInfo.InvariantCulture) };
            Validate(def);
            fn.VersionCounter++;
            var old = fn.Current;
            old.Draining = true;
            foreach (var vm in old.Idle) StopLocked(vm, graceful: true, "function updated", deferred);
            old.Idle.Clear();
            var ver = new VersionEntry(fn, def);
            fn.Versions.Add(ver);
            fn.Current = ver;
            fn.LastModified = _time.GetUtcNow();
            CheckDrainedLocked(old, deferred);
            EnsureProvisionedLocked(fn, deferred);
            PoolLog.Updated(_logger, name, def.Version);
            info = InfoLocked(fn);
        }
        deferred.Run(this);
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
        lock (_lock)
        {
            if (!_functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
            if (fn.Deleted is null)
            {
                fn.State = FunctionState.Deleting;
                fn.Deleted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                fn.Provisioned = 0;
                foreach (var ver in fn.Versions.ToList())
                {
                    ver.Draining = true;
                    foreach (var vm in ver.Idle) StopLocked(vm, graceful: true, "function deleted", deferred);
                    ver.Idle.Clear();
                    CheckDrainedLocked(ver, deferred);
                }
                if (fn.Versions.Count == 0) FinishDeleteLocked(fn, deferred);
                PoolLog.Deleting(_logger, name);
            }
            done = fn.Deleted.Task;
        }
        deferred.Run(this);
        await done.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public FunctionInfo GetFunction(string name)
    {
        lock (_lock)
        {
            if (!_functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
            return InfoLocked(fn);
        }
    }

    /// <summary>All functions (including ones being deleted), ordered by name.</summary>
    public IReadOnlyList<FunctionInfo> ListFunctions()
    {
        lock (_lock)
            return _functions.Values.OrderBy(f => f.Name, StringComparer.Ordinal).Select(InfoLocked).ToList();
    }

    /// <summary>
    /// Sets (or with null removes) the function's reserved concurrency. The sum of reservations may not exceed the
    /// account limit minus the unreserved minimum; 0 throttles every invocation. Must be ≥ provisioned concurrency.
    /// </summary>
    public FunctionInfo PutReservedConcurrency(string name, int? reservedConcurrency)
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            var fn = GetLiveLocked(name);
            if (reservedConcurrency is int r && r < fn.Provisioned)
                throw new InvalidFunctionRequestException("ReservedConcurrency",
                    $"{r} is below the function's provisioned concurrency of {fn.Provisioned}");
            _ledger.SetReserved(fn.Slot, reservedConcurrency);
            fn.LastModified = _time.GetUtcNow();
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
        lock (_lock)
        {
            ThrowIfDisposed();
            var fn = GetLiveLocked(name);
            if (provisionedConcurrency < 0)
                throw new InvalidFunctionRequestException("ProvisionedConcurrency", "must be ≥ 0");
            int max = fn.Slot.Reserved ?? _ledger.UnreservedLimit;
            if (provisionedConcurrency > max)
                throw new InvalidFunctionRequestException("ProvisionedConcurrency", fn.Slot.Reserved is null
                    ? $"{provisionedConcurrency} exceeds the unreserved account concurrency of {max}"
                    : $"{provisionedConcurrency} exceeds the function's reserved concurrency of {max}");
            fn.Provisioned = provisionedConcurrency;
            fn.LastModified = _time.GetUtcNow();
            EnsureProvisionedLocked(fn, deferred);
            info = InfoLocked(fn);
        }
        deferred.Run(this);
        return info;
    }

    public AccountSettings GetAccountSettings()
    {
        lock (_lock)
        {
            return new AccountSettings
            {
                ConcurrencyLimit = _ledger.AccountLimit,
                UnreservedMinimum = _ledger.UnreservedMinimum,
                TotalReserved = _ledger.TotalReserved,
                UnreservedConcurrency = _ledger.UnreservedLimit,
                UnreservedAvailable = Math.Max(0, _ledger.UnreservedLimit - _ledger.UnreservedInFlight),
                InFlight = _ledger.TotalInFlight,
                FunctionCount = _functions.Count,
                AsyncQueued = _queue.Reader.Count,
                Invocations = _totals.Invocations,
                Errors = _totals.Errors,
                Throttles = _totals.Throttles,
                GbSeconds = _totals.GbSeconds,
            };
        }
    }

    // ---------------------------------------------------------------- helpers

    [GeneratedRegex("^[A-Za-z0-9_-]{1,64}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    internal static void Validate(FunctionDefinition d)
    {
        if (string.IsNullOrEmpty(d.Name) || !NamePattern().IsMatch(d.Name))
            throw new InvalidFunctionRequestException("Name", "1 to 64 letters, digits, '-' or '_'");
        if (d.MemoryMib is < 128 or > 10240)
            throw new InvalidFunctionRequestException("MemoryMib", "must be within [128, 10240]");
        if (d.Vcpus is < 1 or > 32)
            throw new InvalidFunctionRequestException("Vcpus", "must be within [1, 32]");
        if (d.Timeout <= TimeSpan.Zero || d.Timeout > TimeSpan.FromMinutes(15))
            throw new InvalidFunctionRequestException("Timeout", "must be within (0, 15 min]");
        if (d.LayerPaths.Count > 5)
            throw new InvalidFunctionRequestException("LayerPaths", "at most 5 layers");
        if (string.IsNullOrWhiteSpace(d.Handler)) throw new InvalidFunctionRequestException("Handler", "required");
        if (string.IsNullOrWhiteSpace(d.KernelPath)) throw new InvalidFunctionRequestException("KernelPath", "required");
        if (string.IsNullOrWhiteSpace(d.RootfsPath)) throw new InvalidFunctionRequestException("RootfsPath", "required");
        if (string.IsNullOrWhiteSpace(d.CodeImagePath)) throw new InvalidFunctionRequestException("CodeImagePath", "required");
        if (d.LayerPaths.Any(string.IsNullOrWhiteSpace)) throw new InvalidFunctionRequestException("LayerPaths", "empty path");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private FunctionEntry GetLiveLocked(string name)
    {
        if (!_functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
        if (fn.State == FunctionState.Deleting) throw new FunctionDeletingException(name);
        return fn;
    }

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

    /// <summary>Runs <paramref name="work"/> as a background task that <see cref="DisposeAsync"/> waits for.</summary>
    private void Track(Func<Task> work)
    {
        var task = Task.Run(work);
        lock (_lock) _background.Add(task);
        task.ContinueWith(t =>
        {
            lock (_lock) _background.Remove(t);
            if (t.Exception is { } e) PoolLog.BackgroundFailed(_logger, e.InnerException?.Message ?? e.Message);
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Waits until no background work (VM shutdowns, provisioning, retries, snapshot discards) is left.</summary>
    internal async Task QuiesceAsync()
    {
        while (true)
        {
            Task[] pending;
            lock (_lock) pending = [.. _background];
            if (pending.Length == 0) return;
            try { await Task.WhenAll(pending).ConfigureAwait(false); } catch { /* logged by Track */ }
        }
    }

    /// <summary>Work that must start after the lock is released.</summary>
    private sealed class Deferred
    {
        private List<Func<Task>>? _work;
        public void Add(Func<Task> work) => (_work ??= []).Add(work);
        public void Run(FunctionPool pool)
        {
            if (_work is null) return;
            foreach (var w in _work) pool.Track(w);
            _work = null;
        }
    }

    private sealed class Totals
    {
        public long Invocations, Errors, Throttles;
        public decimal GbSeconds;
    }

    public async ValueTask DisposeAsync()
    {
        var deferred = new Deferred();
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var fn in _functions.Values)
            {
                fn.Provisioned = 0;
                foreach (var ver in fn.Versions)
                {
                    foreach (var vm in ver.Idle) StopLocked(vm, graceful: true, "pool disposed", deferred);
                    ver.Idle.Clear();
                }
            }
        }
        _reaper.Dispose();
        _queue.Writer.TryComplete();
        // In-flight invocations, VM creations, retry delays and the async workers all observe this.
        await _lifetime.CancelAsync().ConfigureAwait(false);
        deferred.Run(this);
        try { await Task.WhenAll(_workers).ConfigureAwait(false); } catch { /* cancelled */ }
        while (_queue.Reader.TryRead(out var work)) FinishAsync(work, AsyncInvocationState.Failed, null, "pool disposed");
        await QuiesceAsync().ConfigureAwait(false);
        // _lifetime is not disposed: late callers may still read its token (it owns no timer).
        PoolLog.Disposed(_logger);
    }

    private static partial class PoolLog
    {
        [LoggerMessage(800, LogLevel.Information, "function {Name}: created (version {Version})")]
        public static partial void Created(ILogger logger, string name, string version);

        [LoggerMessage(801, LogLevel.Information, "function {Name}: updated to version {Version}")]
        public static partial void Updated(ILogger logger, string name, string version);

        [LoggerMessage(802, LogLevel.Information, "function {Name}: deleting")]
        public static partial void Deleting(ILogger logger, string name);

        [LoggerMessage(803, LogLevel.Information, "function {Name}: deleted")]
        public static partial void Deleted(ILogger logger, string name);

        [LoggerMessage(804, LogLevel.Warning, "pool background task failed: {Error}")]
        public static partial void BackgroundFailed(ILogger logger, string error);

        [LoggerMessage(805, LogLevel.Warning, "function {Name}: VM {Vm} shutdown failed: {Error}")]
        public static partial void ShutdownFailed(ILogger logger, string name, string vm, string error);

        [LoggerMessage(806, LogLevel.Warning, "function {Name}: creating a provisioned VM failed: {Error}")]
        public static partial void ProvisionFailed(ILogger logger, string name, string error);

        [LoggerMessage(807, LogLevel.Information, "function {Name}: VM {Vm} recycled after {Status}")]
        public static partial void Recycled(ILogger logger, string name, string vm, VmInvokeStatus status);

        [LoggerMessage(808, LogLevel.Debug, "idle reaper shut down {Count} VMs")]
        public static partial void Reaped(ILogger logger, int count);

        [LoggerMessage(809, LogLevel.Warning, "function {Name}: discarding snapshots failed: {Error}")]
        public static partial void DiscardFailed(ILogger logger, string name, string error);

        [LoggerMessage(810, LogLevel.Information, "function pool disposed")]
        public static partial void Disposed(ILogger logger);
    }
}
