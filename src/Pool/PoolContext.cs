using Microsoft.Extensions.Logging;

namespace FireSharp.Pool;

/// <summary>
/// What the parts of a <see cref="FunctionPool"/> share: one lock over all bookkeeping (the registry, the ledger,
/// the VM sets, the counters), the clock, the pool's lifetime and its background work. Each part takes the lock
/// itself and never holds it across an await; factory and VM calls happen outside it.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001",
    Justification = "_lifetime is never disposed: late callers may still read its token after the pool stopped (it owns no timer).")]
internal sealed class PoolContext
{
    private readonly CancellationTokenSource _lifetime = new();

    public PoolContext(IFunctionVmFactory factory, PoolOptions options, ILogger logger)
    {
        Factory = factory;
        Options = options;
        Totals = new Totals(options.Observer);
        Logger = logger;
        Time = options.TimeProvider;
        Ledger = new ConcurrencyLedger(options.AccountConcurrencyLimit, options.UnreservedMinimum);
        Background = new BackgroundWork(logger);
    }

    public IFunctionVmFactory Factory { get; }
    public PoolOptions Options { get; }
    public ILogger Logger { get; }
    public TimeProvider Time { get; }

    /// <summary>Guards everything below, and every entry, VM set and counter reachable from it.</summary>
    public Lock Lock { get; } = new();
    public ConcurrencyLedger Ledger { get; }
    public Dictionary<string, FunctionEntry> Functions { get; } = new(StringComparer.Ordinal);
    public Totals Totals { get; }
    /// <summary>Set once, under <see cref="Lock"/>, when disposal starts.</summary>
    public bool Disposed { get; set; }

    public BackgroundWork Background { get; }

    /// <summary>Cancelled when the pool is disposed: in-flight invocations, VM creations, retry delays and workers stop.</summary>
    public CancellationToken Lifetime => _lifetime.Token;

    public bool IsStopping => _lifetime.IsCancellationRequested;

    // _lifetime is never disposed: late callers may still read its token (it owns no timer).
    public Task StopAsync() => _lifetime.CancelAsync();

    public void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Disposed, typeof(FunctionPool));

    /// <summary>Under the lock: the function, unless it is unknown or being deleted.</summary>
    public FunctionEntry GetLiveLocked(string name)
    {
        if (!Functions.TryGetValue(name, out var fn)) throw new FunctionNotFoundException(name);
        if (fn.State == FunctionState.Deleting) throw new FunctionDeletingException(name);
        return fn;
    }
}

/// <summary>Background tasks of the pool (VM shutdowns, provisioning, retry delays, snapshot discards), so that disposal and tests can wait for them.</summary>
internal sealed class BackgroundWork(ILogger logger)
{
    private readonly Lock _lock = new();
    private readonly HashSet<Task> _tasks = [];

    /// <summary>Runs <paramref name="work"/> as a background task that <see cref="QuiesceAsync"/> waits for.</summary>
    public void Track(Func<Task> work)
    {
        var task = Task.Run(work);
        lock (_lock) _tasks.Add(task);
        task.ContinueWith(t =>
        {
            lock (_lock) _tasks.Remove(t);
            if (t.Exception is { } e) PoolLog.BackgroundFailed(logger, e.InnerException?.Message ?? e.Message);
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Waits until no background work is left.</summary>
    public async Task QuiesceAsync()
    {
        while (true)
        {
            Task[] pending;
            lock (_lock) pending = [.. _tasks];
            if (pending.Length == 0) return;
            try { await Task.WhenAll(pending).ConfigureAwait(false); } catch { /* logged by Track */ }
        }
    }
}

/// <summary>Work decided under the pool's lock that must start after it is released.</summary>
internal sealed class Deferred
{
    private List<Func<Task>>? _work;

    public void Add(Func<Task> work) => (_work ??= []).Add(work);

    public void Run(BackgroundWork background)
    {
        if (_work is null) return;
        foreach (var w in _work) background.Track(w);
        _work = null;
    }
}
