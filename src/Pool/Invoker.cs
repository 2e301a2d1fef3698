using System.Diagnostics;

namespace FireSharp.Pool;

/// <summary>
/// One invocation that runs now: admission by the concurrency ledger (or a throttle), a warm VM or a new one from
/// the factory, the host's deadline, the VM's outcome turned into a result, then the VM back to idle or recycled,
/// and the usage counted.
/// </summary>
internal sealed class Invoker(PoolContext pool, VmKeeper vms)
{
    private PoolOptions Options => pool.Options;

    public void CheckPayload(ReadOnlyMemory<byte> payload, InvocationType type)
    {
        int limit = type == InvocationType.Event ? Options.MaxEventPayloadBytes : Options.MaxRequestResponsePayloadBytes;
        if (payload.Length > limit) throw new RequestTooLargeException(payload.Length, limit, type);
    }

    /// <summary>An invocation's id: a fresh GUID.</summary>
    public static string NewRequestId() => Guid.NewGuid().ToString();

    /// <summary>One attempt: admit, get a VM, run, release. Throws only for throttles, missing functions, cancellation, factory failures.</summary>
    public async Task<InvokeResult> RunAsync(string name, ReadOnlyMemory<byte> payload, string requestId, CancellationToken ct)
    {
        FunctionEntry fn;
        VersionEntry ver;
        PooledVm? vm;
        var acquire = PoolTracing.Start(PoolTracing.AcquireSpan, name, requestId);
        try
        {
            lock (pool.Lock)
            {
                pool.ThrowIfDisposed();
                fn = pool.GetLiveLocked(name);
                if (!pool.Ledger.TryAcquire(fn.Slot, out var reason, out int limit))
                {
                    pool.Totals.CountThrottle(fn, reason);
                    throw new FunctionThrottledException(name, reason, limit, Options.ThrottleRetryAfter);
                }
                ver = fn.Current;
                vm = ver.TakeIdle();
                if (vm is not null) ver.Busy.Add(vm);
                else ver.CreatingForInvoke++;
            }
        }
        catch (Exception e)
        {
            PoolTracing.End(acquire, e.Message);
            throw;
        }

        var def = ver.Definition;
        StartKind kind = StartKind.Warm;
        TimeSpan? initDuration = null;
        if (vm is null)
        {
            long createStart = pool.Time.GetTimestamp();
            IFunctionVm created;
            try
            {
                using var createCts = CancellationTokenSource.CreateLinkedTokenSource(ct, pool.Lifetime);
                using var creating = PoolTracing.Start(PoolTracing.CreateVmSpan, name, requestId);
                created = await pool.Factory.CreateAsync(def, createCts.Token).ConfigureAwait(false);
                creating?.SetTag("firesharp.vm_id", created.Id);
                creating?.SetTag("firesharp.start_kind", PoolTracing.Name(created.CreatedAs == StartKind.Warm ? StartKind.BootCold : created.CreatedAs));
            }
            catch (FunctionInitException e)
            {
                PoolTracing.End(acquire, e.ErrorType);
                var took = pool.Time.GetElapsedTime(createStart);
                var result = InvokeResults.FromInitError(requestId, def, e, took);
                ReleaseWithoutVm(fn, ver, result);
                return result;
            }
            catch (Exception e)
            {
                PoolTracing.End(acquire, e.Message);
                ReleaseWithoutVm(fn, ver, null);
                throw;
            }
            lock (pool.Lock)
            {
                ver.CreatingForInvoke--;
                vm = new PooledVm(created, ver, provisioned: false);
                ver.Busy.Add(vm);
            }
            kind = created.CreatedAs == StartKind.Warm ? StartKind.BootCold : created.CreatedAs;
            initDuration = created.InitDuration;
        }

        acquire?.SetTag("faas.coldstart", kind != StartKind.Warm);
        acquire?.SetTag("firesharp.start_kind", PoolTracing.Name(kind));
        acquire?.SetTag("firesharp.vm_id", vm.Vm.Id);
        PoolTracing.End(acquire, null);

        using var invoking = PoolTracing.Start(PoolTracing.InvokeSpan, name, requestId);
        invoking?.SetTag("firesharp.vm_id", vm.Vm.Id);
        var now = pool.Time.GetUtcNow();
        var request = new VmInvokeRequest(requestId, payload, now + def.Timeout);
        using var hostDeadline = new CancellationTokenSource(def.Timeout + Options.TimeoutGrace, pool.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, hostDeadline.Token, pool.Lifetime);
        long start = pool.Time.GetTimestamp();
        VmInvokeOutcome outcome;
        Task<VmInvokeOutcome>? running = null;
        try
        {
            running = vm.Vm.InvokeAsync(request, linked.Token);
            outcome = await running.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested || pool.IsStopping)
        {
            Observe(running);
            Release(fn, vm, reuse: false, null, VmInvokeStatus.Crashed);
            throw;
        }
        catch (OperationCanceledException) when (hostDeadline.IsCancellationRequested)
        {
            Observe(running);
            outcome = new VmInvokeOutcome
            {
                Status = VmInvokeStatus.Timeout,
                Unhandled = true,
                Duration = def.Timeout,
            };
        }
        catch (Exception e)
        {
            outcome = new VmInvokeOutcome
            {
                Status = VmInvokeStatus.Crashed,
                Unhandled = true,
                LogTail = e.Message,
                Duration = pool.Time.GetElapsedTime(start),
            };
        }

        invoking?.SetTag("firesharp.outcome", outcome.Status.ToString());
        if (outcome.Status != VmInvokeStatus.Success) invoking?.SetStatus(ActivityStatusCode.Error, outcome.ErrorType ?? outcome.Status.ToString());
        var duration = outcome.Duration > TimeSpan.Zero ? outcome.Duration : pool.Time.GetElapsedTime(start);
        var invokeResult = InvokeResults.FromOutcome(requestId, def, outcome, kind, initDuration, duration);
        bool reuse = outcome.Status == VmInvokeStatus.Success
                     || (outcome.Status == VmInvokeStatus.FunctionError && !outcome.Unhandled);
        Release(fn, vm, reuse, invokeResult, outcome.Status);
        return invokeResult;
    }

    private static void Observe(Task? task) =>
        task?.ContinueWith(static t => _ = t.Exception, CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    /// <summary>Ends an invocation whose VM creation failed.</summary>
    private void ReleaseWithoutVm(FunctionEntry fn, VersionEntry ver, InvokeResult? initError)
    {
        var deferred = new Deferred();
        lock (pool.Lock)
        {
            ver.CreatingForInvoke--;
            pool.Ledger.Release(fn.Slot);
            if (initError is not null)
            {
                fn.Stats.InitErrors++;
                pool.Totals.Count(fn, initError);
            }
            vms.CheckDrainedLocked(ver, deferred);
        }
        deferred.Run(pool.Background);
    }

    /// <summary>Ends an invocation: the VM goes idle (reuse, current version), is shut down (old version) or recycled.</summary>
    private void Release(FunctionEntry fn, PooledVm vm, bool reuse, InvokeResult? result, VmInvokeStatus status)
    {
        var deferred = new Deferred();
        var ver = vm.Version;
        lock (pool.Lock)
        {
            ver.Busy.Remove(vm);
            pool.Ledger.Release(fn.Slot);
            if (result is not null)
            {
                if (status == VmInvokeStatus.Timeout) fn.Stats.Timeouts++;
                pool.Totals.Count(fn, result);
            }
            if (reuse && !ver.Draining && !pool.Disposed)
            {
                vm.IdleSince = pool.Time.GetUtcNow();
                ver.Idle.Add(vm);
            }
            else if (reuse)
            {
                vms.StopLocked(vm, graceful: true, ver.Function.State == FunctionState.Deleting ? "function deleted" : pool.Disposed ? "pool disposed" : "function updated", deferred);
            }
            else
            {
                PoolLog.Recycled(pool.Logger, fn.Name, vm.Vm.Id, status);
                vms.StopLocked(vm, graceful: false, "recycled", deferred);
                if (vm.Provisioned && !ver.Draining) vms.EnsureProvisionedLocked(fn, deferred);
            }
            vms.CheckDrainedLocked(ver, deferred);
        }
        deferred.Run(pool.Background);
    }
}
