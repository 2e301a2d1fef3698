namespace FireSharp.Pool;

/// <summary>
/// The VMs between invocations: keeps provisioned concurrency filled, takes VMs to their end (graceful shutdown or
/// dispose), notices when an old version has drained (then discards its snapshots, or finishes a delete), and
/// reaps VMs idle for longer than <see cref="PoolOptions.IdleTtl"/>. Methods named *Locked run under the pool lock
/// and leave their slow work in a <see cref="Deferred"/>.
/// </summary>
internal sealed class VmKeeper(PoolContext pool)
{
    private PoolOptions Options => pool.Options;

    /// <summary>
    /// Called after a VM left <paramref name="ver"/> or a creation for it ended: forgets a drained old version,
    /// then discards old snapshots (no older version left) or finishes a delete (no version left).
    /// </summary>
    public void CheckDrainedLocked(VersionEntry ver, Deferred deferred)
    {
        if (!ver.Draining || !ver.IsEmpty) return;
        var fn = ver.Function;
        if (!fn.Versions.Remove(ver)) return;
        if (fn.State == FunctionState.Deleting)
        {
            if (fn.Versions.Count == 0) FinishDeleteLocked(fn, deferred);
        }
        else if (fn.Versions.Count == 1 && !pool.Disposed)
        {
            string keep = fn.Current.Definition.Version;
            deferred.Add(() => DiscardSnapshotsAsync(fn.Name, keep));
        }
    }

    public void FinishDeleteLocked(FunctionEntry fn, Deferred deferred)
    {
        deferred.Add(async () =>
        {
            await DiscardSnapshotsAsync(fn.Name, null).ConfigureAwait(false);
            lock (pool.Lock)
            {
                if (pool.Functions.TryGetValue(fn.Name, out var cur) && cur == fn) pool.Functions.Remove(fn.Name);
                pool.Ledger.Remove(fn.Slot);
            }
            PoolLog.Deleted(pool.Logger, fn.Name);
            fn.Deleted!.TrySetResult();
        });
    }

    private async Task DiscardSnapshotsAsync(string name, string? keepVersion)
    {
        try { await pool.Factory.DiscardSnapshotsAsync(name, keepVersion, CancellationToken.None).ConfigureAwait(false); }
        catch (Exception e) { PoolLog.DiscardFailed(pool.Logger, name, e.Message); }
    }

    /// <summary>Starts creations (after the lock) so that the current version has <see cref="FunctionEntry.Provisioned"/> provisioned VMs; demotes extras.</summary>
    public void EnsureProvisionedLocked(FunctionEntry fn, Deferred deferred)
    {
        if (pool.Disposed || fn.State == FunctionState.Deleting) return;
        var ver = fn.Current;
        int have = ver.ProvisionedCount();
        int excess = have - fn.Provisioned;
        if (excess > 0)
        {
            // Demote idle ones first (they become ordinary warm VMs, reaped after IdleTtl), then busy ones.
            foreach (var vm in ver.Idle) if (excess > 0 && vm.Provisioned) { vm.Provisioned = false; excess--; vm.IdleSince = pool.Time.GetUtcNow(); }
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
            vm = await pool.Factory.CreateAsync(ver.Definition, pool.Lifetime).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await ProvisionFailedAsync(ver, e).ConfigureAwait(false);
            return;
        }

        var done = new Deferred();
        lock (pool.Lock)
        {
            ver.CreatingProvisioned--;
            var pooled = new PooledVm(vm, ver, provisioned: ver.ProvisionedCount() < fn.Provisioned)
            {
                IdleSince = pool.Time.GetUtcNow(),
            };
            if (!pool.Disposed && !ver.Draining && fn.State == FunctionState.Active) ver.Idle.Add(pooled);
            else StopLocked(pooled, graceful: true, "no longer needed", done);
        }
        done.Run(pool.Background);
    }

    /// <summary>A provisioned creation failed: count it, and try again after <see cref="PoolOptions.ProvisionRetryDelay"/> (once per function at a time).</summary>
    private async Task ProvisionFailedAsync(VersionEntry ver, Exception e)
    {
        var fn = ver.Function;
        bool retry;
        var deferred = new Deferred();
        lock (pool.Lock)
        {
            ver.CreatingProvisioned--;
            if (e is FunctionInitException) { fn.Stats.InitErrors++; }
            retry = !pool.Disposed && !ver.Draining && !fn.ProvisionRetryPending;
            if (retry) fn.ProvisionRetryPending = true;
            CheckDrainedLocked(ver, deferred);
        }
        deferred.Run(pool.Background);
        if (e is OperationCanceledException && pool.IsStopping) return;
        PoolLog.ProvisionFailed(pool.Logger, fn.Name, e.Message);
        if (!retry) return;
        try { await Task.Delay(Options.ProvisionRetryDelay, pool.Time, pool.Lifetime).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        lock (pool.Lock)
        {
            fn.ProvisionRetryPending = false;
            EnsureProvisionedLocked(fn, deferred);
        }
        deferred.Run(pool.Background);
    }

    /// <summary>Takes a VM that is already out of Idle/Busy to its end (after the lock); the version counts it until then.</summary>
    public void StopLocked(PooledVm vm, bool graceful, string reason, Deferred deferred)
    {
        vm.Version.Stopping++;
        deferred.Add(() => StopVmAsync(vm, graceful, reason));
    }

    private async Task StopVmAsync(PooledVm vm, bool graceful, string reason)
    {
        if (graceful) await ShutdownVmAsync(vm, reason).ConfigureAwait(false);
        else await DisposeVmAsync(vm).ConfigureAwait(false);
        var deferred = new Deferred();
        lock (pool.Lock)
        {
            vm.Version.Stopping--;
            CheckDrainedLocked(vm.Version, deferred);
        }
        deferred.Run(pool.Background);
    }

    /// <summary>Graceful stop (bounded by <see cref="PoolOptions.ShutdownTimeout"/>), then dispose.</summary>
    private async Task ShutdownVmAsync(PooledVm vm, string reason)
    {
        try
        {
            using var cts = new CancellationTokenSource(Options.ShutdownTimeout, pool.Time);
            await vm.Vm.ShutdownAsync(reason, cts.Token).WaitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            PoolLog.ShutdownFailed(pool.Logger, vm.Version.Function.Name, vm.Vm.Id, e.Message);
        }
        await DisposeVmAsync(vm).ConfigureAwait(false);
    }

    private async Task DisposeVmAsync(PooledVm vm)
    {
        try { await vm.Vm.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { PoolLog.ShutdownFailed(pool.Logger, vm.Version.Function.Name, vm.Vm.Id, e.Message); }
    }

    /// <summary>The reaper's timer callback: a tracked <see cref="ReapIdleAsync"/>.</summary>
    public void OnReapTimer()
    {
        lock (pool.Lock) if (pool.Disposed) return;
        pool.Background.Track(ReapIdleAsync);
    }

    /// <summary>Shuts down idle VMs that are not provisioned and have been idle for <see cref="PoolOptions.IdleTtl"/> or longer.</summary>
    public async Task<int> ReapIdleAsync()
    {
        var victims = new List<PooledVm>();
        lock (pool.Lock)
        {
            if (pool.Disposed) return 0;
            var now = pool.Time.GetUtcNow();
            foreach (var fn in pool.Functions.Values)
                foreach (var ver in fn.Versions)
                    ver.Idle.RemoveAll(vm =>
                    {
                        bool old = !vm.Provisioned && now - vm.IdleSince >= Options.IdleTtl;
                        if (old) { victims.Add(vm); ver.Stopping++; }
                        return old;
                    });
        }
        if (victims.Count == 0) return 0;
        await Task.WhenAll(victims.Select(vm => StopVmAsync(vm, graceful: true, "idle"))).ConfigureAwait(false);
        PoolLog.Reaped(pool.Logger, victims.Count);
        return victims.Count;
    }
}
