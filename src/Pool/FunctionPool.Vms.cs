using Microsoft.Extensions.Logging;

namespace FireSharp.Pool;

// VM bookkeeping: versions, idle/busy sets, draining, provisioned refill, idle reaping, shutdown.
public sealed partial class FunctionPool
{
    private sealed class FunctionEntry(string name, ConcurrencyLedger.Entry slot)
    {
        public string Name { get; } = name;
        public ConcurrencyLedger.Entry Slot { get; } = slot;
        /// <summary>The version new invocations use.</summary>
        public VersionEntry Current { get; set; } = null!;
        /// <summary>Versions that still have VMs (or VM creations), including <see cref="Current"/>.</summary>
        public List<VersionEntry> Versions { get; } = [];
        public int VersionCounter { get; set; }
        public int Provisioned { get; set; }
        public bool ProvisionRetryPending { get; set; }
        public FunctionState State { get; set; } = FunctionState.Active;
        public DateTimeOffset LastModified { get; set; }
        public TaskCompletionSource? Deleted { get; set; }
        public StatsAccumulator Stats { get; } = new();
    }

    private sealed class VersionEntry(FunctionEntry function, FunctionDefinition definition)
    {
        public FunctionEntry Function { get; } = function;
        public FunctionDefinition Definition { get; } = definition;
        /// <summary>Idle VMs, least recently used first.</summary>
        public List<PooledVm> Idle { get; } = [];
        public HashSet<PooledVm> Busy { get; } = [];
        public int CreatingForInvoke { get; set; }
        public int CreatingProvisioned { get; set; }
        /// <summary>VMs taken out of Idle/Busy whose shutdown or disposal has not finished.</summary>
        public int Stopping { get; set; }
        /// <summary>No longer current (updated or deleted): VMs are shut down instead of going idle.</summary>
        public bool Draining { get; set; }
        public bool IsEmpty => Idle.Count == 0 && Busy.Count == 0 && CreatingForInvoke == 0 && CreatingProvisioned == 0 && Stopping == 0;

        /// <summary>The most recently used idle VM, provisioned ones first.</summary>
        public PooledVm? TakeIdle()
        {
            int pick = -1;
            for (int i = Idle.Count - 1; i >= 0; i--)
                if (Idle[i].Provisioned) { pick = i; break; }
            if (pick < 0) pick = Idle.Count - 1;
            if (pick < 0) return null;
            var vm = Idle[pick];
            Idle.RemoveAt(pick);
            return vm;
        }

        public int ProvisionedCount()
        {
            int n = 0;
            foreach (var vm in Idle) if (vm.Provisioned) n++;
            foreach (var vm in Busy) if (vm.Provisioned) n++;
            return n;
        }
    }

    private sealed class PooledVm(IFunctionVm vm, VersionEntry version, bool provisioned)
    {
        public IFunctionVm Vm { get; } = vm;
        public VersionEntry Version { get; } = version;
        /// <summary>Counts toward the function's provisioned concurrency (never reaped).</summary>
        public bool Provisioned { get; set; } = provisioned;
        public DateTimeOffset IdleSince { get; set; }
    }

    /// <summary>
    /// Called after a VM left <paramref name="ver"/> or a creation for it ended: forgets a drained old version,
    /// then discards old snapshots (no older version left) or finishes a delete (no version left).
    /// </summary>
    private void CheckDrainedLocked(VersionEntry ver, Deferred deferred)
    {
        if (!ver.Draining || !ver.IsEmpty) return;
        var fn = ver.Function;
        if (!fn.Versions.Remove(ver)) return;
        if (fn.State == FunctionState.Deleting)
        {
            if (fn.Versions.Count == 0) FinishDeleteLocked(fn, deferred);
        }
        else if (fn.Versions.Count == 1 && !_disposed)
        {
            string keep = fn.Current.Definition.Version;
            deferred.Add(() => DiscardSnapshotsAsync(fn.Name, keep));
        }
    }

    private void FinishDeleteLocked(FunctionEntry fn, Deferred deferred)
    {
        deferred.Add(async () =>
        {
            await DiscardSnapshotsAsync(fn.Name, null).ConfigureAwait(false);
            lock (_lock)
            {
                if (_functions.TryGetValue(fn.Name, out var cur) && cur == fn) _functions.Remove(fn.Name);
                _ledger.Remove(fn.Slot);
            }
            PoolLog.Deleted(_logger, fn.Name);
            fn.Deleted!.TrySetResult();
        });
    }

    private async Task DiscardSnapshotsAsync(string name, string? keepVersion)
    {
        try { await _factory.DiscardSnapshotsAsync(name, keepVersion, CancellationToken.None).ConfigureAwait(false); }
        catch (Exception e) { PoolLog.DiscardFailed(_logger, name, e.Message); }
    }

    /// <summary>Starts creations (after the lock) so that the current version has <see cref="FunctionEntry.Provisioned"/> provisioned VMs; demotes extras.</summary>
    private void EnsureProvisionedLocked(FunctionEntry fn, Deferred deferred)
    {
        if (_disposed || fn.State == FunctionState.Deleting) return;
        var ver = fn.Current;
        int have = ver.ProvisionedCount();
        int excess = have - fn.Provisioned;
        if (excess > 0)
        {
            // Demote idle ones first (they become ordinary warm VMs, reaped after IdleTtl), then busy ones.
            foreach (var vm in ver.Idle) if (excess > 0 && vm.Provisioned) { vm.Provisioned = false; excess--; vm.IdleSince = _time.GetUtcNow(); }
            foreach (var vm in ver.Busy) if (excess > 0 && vm.Provisioned) { vm.Provisioned = false; excess--; }
            return;
        }
        if (fn.ProvisionRetryPending) return;
        int deficit = fn.Provisioned - have - ver.CreatingProvisioned;
        for (int i = 0; i < deficit; i++)
        {
            ver.CreatingProvisioned++;
            deferred.Add(() => CreateProvisionedAsync(ver));
        }
    }

    private async Task CreateProvisionedAsync(VersionEntry ver)
    {
        var fn = ver.Function;
        IFunctionVm vm;
        try
        {
            vm = await _factory.CreateAsync(ver.Definition, _lifetime.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            bool retry;
            var deferred = new Deferred();
            lock (_lock)
            {
                ver.CreatingProvisioned--;
                if (e is FunctionInitException) { fn.Stats.InitErrors++; }
                retry = !_disposed && !ver.Draining && !fn.ProvisionRetryPending;
                if (retry) fn.ProvisionRetryPending = true;
                CheckDrainedLocked(ver, deferred);
            }
            deferred.Run(this);
            if (e is OperationCanceledException && _lifetime.IsCancellationRequested) return;
            PoolLog.ProvisionFailed(_logger, fn.Name, e.Message);
            if (!retry) return;
            try { await Task.Delay(_options.ProvisionRetryDelay, _time, _lifetime.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            lock (_lock)
            {
                fn.ProvisionRetryPending = false;
                EnsureProvisionedLocked(fn, deferred);
            }
            deferred.Run(this);
            return;
        }

        var done = new Deferred();
        lock (_lock)
        {
            ver.CreatingProvisioned--;
            var pooled = new PooledVm(vm, ver, provisioned: ver.ProvisionedCount() < fn.Provisioned)
            {
                IdleSince = _time.GetUtcNow(),
            };
            if (!_disposed && !ver.Draining && fn.State == FunctionState.Active) ver.Idle.Add(pooled);
            else StopLocked(pooled, graceful: true, "no longer needed", done);
        }
        done.Run(this);
    }

    /// <summary>Takes a VM that is already out of Idle/Busy to its end (after the lock); the version counts it until then.</summary>
    private void StopLocked(PooledVm vm, bool graceful, string reason, Deferred deferred)
    {
        vm.Version.Stopping++;
        deferred.Add(() => StopVmAsync(vm, graceful, reason));
    }

    private async Task StopVmAsync(PooledVm vm, bool graceful, string reason)
    {
        if (graceful) await ShutdownVmAsync(vm, reason).ConfigureAwait(false);
        else await DisposeVmAsync(vm).ConfigureAwait(false);
        var deferred = new Deferred();
        lock (_lock)
        {
            vm.Version.Stopping--;
            CheckDrainedLocked(vm.Version, deferred);
        }
        deferred.Run(this);
    }

    /// <summary>Graceful stop (bounded by <see cref="PoolOptions.ShutdownTimeout"/>), then dispose.</summary>
    private async Task ShutdownVmAsync(PooledVm vm, string reason)
    {
        try
        {
            using var cts = new CancellationTokenSource(_options.ShutdownTimeout, _time);
            await vm.Vm.ShutdownAsync(reason, cts.Token).WaitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            PoolLog.ShutdownFailed(_logger, vm.Version.Function.Name, vm.Vm.Id, e.Message);
        }
        await DisposeVmAsync(vm).ConfigureAwait(false);
    }

    private async Task DisposeVmAsync(PooledVm vm)
    {
        try { await vm.Vm.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { PoolLog.ShutdownFailed(_logger, vm.Version.Function.Name, vm.Vm.Id, e.Message); }
    }

    private void OnReapTimer()
    {
        lock (_lock) if (_disposed) return;
        Track(ReapIdleAsync);
    }

    /// <summary>Shuts down idle VMs that are not provisioned and have been idle for <see cref="PoolOptions.IdleTtl"/> or longer.</summary>
    internal async Task<int> ReapIdleAsync()
    {
        var victims = new List<PooledVm>();
        lock (_lock)
        {
            if (_disposed) return 0;
            var now = _time.GetUtcNow();
            foreach (var fn in _functions.Values)
                foreach (var ver in fn.Versions)
                    ver.Idle.RemoveAll(vm =>
                    {
                        bool old = !vm.Provisioned && now - vm.IdleSince >= _options.IdleTtl;
                        if (old) { victims.Add(vm); ver.Stopping++; }
                        return old;
                    });
        }
        if (victims.Count == 0) return 0;
        await Task.WhenAll(victims.Select(vm => StopVmAsync(vm, graceful: true, "idle"))).ConfigureAwait(false);
        PoolLog.Reaped(_logger, victims.Count);
        return victims.Count;
    }

    /// <summary>Per-function counters, mutated under the pool lock.</summary>
    private sealed class StatsAccumulator
    {
        private readonly double[] _durationsMs = new double[1024];
        private int _durationCount, _durationNext;
        public long Invocations, Errors, Throttles, Timeouts, InitErrors, Warm, SnapshotCold, BootCold;
        public long AsyncAccepted, AsyncSucceeded, AsyncFailed, AsyncRetries;
        public decimal GbSeconds;

        public void AddDuration(TimeSpan d)
        {
            _durationsMs[_durationNext] = d.TotalMilliseconds;
            _durationNext = (_durationNext + 1) % _durationsMs.Length;
            if (_durationCount < _durationsMs.Length) _durationCount++;
        }

        public void CountStart(StartKind kind)
        {
            switch (kind)
            {
                case StartKind.Warm: Warm++; break;
                case StartKind.SnapshotCold: SnapshotCold++; break;
                default: BootCold++; break;
            }
        }

        public FunctionStats Snapshot(int inFlight, int idle, int busy, int creating, int provisionedReady, int draining)
        {
            TimeSpan? p50 = null, p99 = null;
            if (_durationCount > 0)
            {
                var sorted = _durationsMs.AsSpan(0, _durationCount).ToArray();
                Array.Sort(sorted);
                p50 = TimeSpan.FromMilliseconds(Percentile(sorted, 0.50));
                p99 = TimeSpan.FromMilliseconds(Percentile(sorted, 0.99));
            }
            return new FunctionStats
            {
                Invocations = Invocations, Errors = Errors, Throttles = Throttles, Timeouts = Timeouts,
                InitErrors = InitErrors, WarmStarts = Warm, SnapshotColdStarts = SnapshotCold, BootColdStarts = BootCold,
                GbSeconds = GbSeconds, DurationP50 = p50, DurationP99 = p99,
                AsyncAccepted = AsyncAccepted, AsyncSucceeded = AsyncSucceeded, AsyncFailed = AsyncFailed, AsyncRetries = AsyncRetries,
                InFlight = inFlight, IdleVms = idle, BusyVms = busy, CreatingVms = creating,
                ProvisionedReady = provisionedReady, DrainingVms = draining,
            };
        }

        // Nearest-rank percentile.
        private static double Percentile(double[] sorted, double p) =>
            sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
