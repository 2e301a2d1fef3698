using FireSharp.Pool;
using FireSharp.Daemon.Functions.Lambda;
using static FireSharp.Tests.Pool.PoolTestSupport;

namespace FireSharp.Tests.Pool;

/// <summary>VM lifecycle: warm reuse, recycling, timeouts, provisioned refill, idle reaping, update and delete drains.</summary>
public class PoolLifecycleTests
{
    private static (FunctionPool Pool, FakeFactory Fake, ManualTimeProvider Time) Setup(Func<PoolOptions, PoolOptions>? tweak = null)
    {
        var fake = new FakeFactory();
        var time = new ManualTimeProvider();
        var options = new PoolOptions
        {
            AccountConcurrencyLimit = 100,
            UnreservedMinimum = 10,
            TimeProvider = time,
            IdleTtl = TimeSpan.FromMinutes(10),
            ReapInterval = TimeSpan.FromMinutes(1),
            TimeoutGrace = TimeSpan.FromSeconds(2),
        };
        return (new FunctionPool(fake, tweak?.Invoke(options) ?? options), fake, time);
    }

    /// <summary>Payload "hold" blocks at <paramref name="hold"/>; anything else answers at once.</summary>
    private static FakeBehavior Holding(TaskCompletionSource hold, AsyncCounter? held = null) => async (vm, req, ct) =>
    {
        if (Text(req.Payload) == "hold")
        {
            held?.Increment();
            await hold.Task.WaitAsync(ct);
        }
        return FakeFactory.Ok(vm);
    };

    [Fact]
    public async Task ColdThenWarm_SameVmReused()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var r1 = await pool.InvokeAsync("f", Bytes("{}"));
        var r2 = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.SnapshotCold, r1.StartKind);
        Assert.Equal(fake.InitDuration, r1.InitDuration);
        Assert.Equal(StartKind.Warm, r2.StartKind);
        Assert.Null(r2.InitDuration);
        Assert.Equal(Text(r1.Payload), Text(r2.Payload));
        Assert.Equal(1, fake.Created);
        Assert.NotEqual(r1.RequestId, r2.RequestId);
        Assert.True(Guid.TryParse(r1.RequestId, out _));
        var stats = pool.GetFunction("f").Stats;
        Assert.Equal(1, stats.SnapshotColdStarts);
        Assert.Equal(1, stats.WarmStarts);
        Assert.Equal(1, stats.IdleVms);
    }

    [Fact]
    public async Task HandledErrorReusesVm_UnhandledErrorRecyclesIt()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(VmInvokeStatus.FunctionError, unhandled: false, "MyError"));
        var handled = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(FunctionErrorKind.Handled, handled.FunctionError);
        Assert.Equal("MyError", handled.ErrorType);
        Assert.True(handled.Payload.IsEmpty); // the VM sent no body; the pool invents none
        Assert.Contains("MyError", Text(LambdaInvokeResponse.From(handled).Payload));

        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(VmInvokeStatus.FunctionError, unhandled: true, "Runtime.ExitError"));
        var unhandled = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.Warm, unhandled.StartKind); // the handled error kept the VM
        Assert.Equal(FunctionErrorKind.Unhandled, unhandled.FunctionError);
        await pool.QuiesceAsync().Live();
        var vm1 = fake.Vms.Single();
        Assert.Equal(1, vm1.DisposeCount);

        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm));
        var next = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.SnapshotCold, next.StartKind);
        Assert.Equal(2, fake.Created);
        Assert.Equal(2, pool.GetFunction("f").Stats.Errors);
    }

    [Fact]
    public async Task HostSideTimeout_KillsAndRecyclesVm_NextInvokeIsCold()
    {
        var (pool, fake, time) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f", timeout: TimeSpan.FromSeconds(3)));
        var started = new AsyncCounter();
        // The VM never answers on its own: only the host's deadline ends the invocation.
        fake.Behavior = async (vm, _, ct) => { started.Increment(); await Task.Delay(Timeout.InfiniteTimeSpan, ct); return FakeFactory.Ok(vm); };
        var t0 = time.GetUtcNow();
        var pending = pool.InvokeAsync("f", Bytes("{}"));
        await started.WaitForAsync(1).Live();
        var vm1 = fake.Vms.Single();
        Assert.Equal(t0 + TimeSpan.FromSeconds(3), vm1.Requests.Single().Deadline);

        time.Advance(TimeSpan.FromSeconds(4)); // past the deadline, within the grace: still running
        Assert.False(pending.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1)); // deadline + grace
        var r = await pending.Live();
        Assert.Equal(VmInvokeStatus.Timeout, r.VmStatus);
        Assert.Equal(FunctionErrorKind.Unhandled, r.FunctionError);
        Assert.Null(r.ErrorType); // the host saw the timeout, not the VM
        Assert.Equal(TimeSpan.FromSeconds(3), r.Duration);
        var lambda = LambdaInvokeResponse.From(r);
        Assert.Equal("Unhandled", lambda.FunctionError);
        Assert.Equal("Sandbox.Timedout", lambda.ErrorType);
        Assert.Contains("Task timed out after 3.00 seconds", Text(lambda.Payload));

        await vm1.Disposed.Task.Live();
        Assert.Equal(0, vm1.ShutdownCount); // killed, not shut down gracefully
        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm));
        var next = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.SnapshotCold, next.StartKind);
        Assert.NotEqual(vm1.Id, Text(next.Payload));
        Assert.Equal(2, fake.Created);
        var stats = pool.GetFunction("f").Stats;
        Assert.Equal(1, stats.Timeouts);
        Assert.Equal(1, stats.Errors);
    }

    [Theory]
    [InlineData(VmInvokeStatus.Timeout, "Sandbox.Timedout")]
    [InlineData(VmInvokeStatus.Crashed, "Runtime.ExitError")]
    [InlineData(VmInvokeStatus.OutOfMemory, "Runtime.OutOfMemory")]
    public async Task VmReportedFailure_RecyclesVm(VmInvokeStatus status, string lambdaErrorType)
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(status));
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(FunctionErrorKind.Unhandled, r.FunctionError);
        Assert.Equal(status, r.VmStatus);
        Assert.Equal(lambdaErrorType, LambdaInvokeResponse.From(r).ErrorType);
        await fake.Vms.Single().Disposed.Task.Live();
        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm));
        Assert.Equal(StartKind.SnapshotCold, (await pool.InvokeAsync("f", Bytes("{}"))).StartKind);
        Assert.Equal(2, fake.Created);
    }

    [Fact]
    public async Task VmThrows_TreatedAsCrash()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        fake.Behavior = (_, _, _) => throw new IOException("agent connection reset");
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(VmInvokeStatus.Crashed, r.VmStatus);
        Assert.Equal(FunctionErrorKind.Unhandled, r.FunctionError);
        Assert.Contains("agent connection reset", r.LogTail);
        await fake.Vms.Single().Disposed.Task.Live();
    }

    [Fact]
    public async Task InitError_IsAnUnhandledResult_AndNoVmIsKept()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        fake.OnCreate = (_, _) => throw new FunctionInitException("Runtime.InitError", "bootstrap not found", "init log");
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(InvokeStatus.Ran, r.Status);
        Assert.Equal(FunctionErrorKind.Unhandled, r.FunctionError);
        Assert.True(r.InitFailed);
        Assert.Equal("Runtime.InitError", r.ErrorType);
        Assert.Equal("bootstrap not found", r.ErrorMessage);
        var lambda = LambdaInvokeResponse.From(r);
        Assert.Equal(200, lambda.StatusCode);
        Assert.Equal("Runtime.InitError", lambda.ErrorType);
        Assert.Contains("bootstrap not found", Text(lambda.Payload));
        Assert.Equal("init log", r.LogTail);
        var stats = pool.GetFunction("f").Stats;
        Assert.Equal(1, stats.InitErrors);
        Assert.Equal(1, stats.Errors);
        Assert.Equal(0, stats.InFlight);
        Assert.Equal(0, stats.IdleVms + stats.BusyVms + stats.CreatingVms);
        Assert.Equal(0, pool.GetAccountSettings().InFlight);

        fake.OnCreate = null;
        Assert.Null((await pool.InvokeAsync("f", Bytes("{}"))).FunctionError);
    }

    [Fact]
    public async Task FactoryServiceError_Propagates_AndReleasesTheSlot()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutReservedConcurrency("f", 1);
        fake.OnCreate = (_, _) => throw new InvalidOperationException("no worker");
        await Assert.ThrowsAsync<InvalidOperationException>(() => pool.InvokeAsync("f", Bytes("{}")));
        fake.OnCreate = null;
        Assert.Null((await pool.InvokeAsync("f", Bytes("{}"))).FunctionError); // not throttled: the slot came back
    }

    [Fact]
    public async Task CallerCancellation_AbandonsAndRecyclesVm()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new AsyncCounter();
        fake.Behavior = Holding(hold, held);
        using var cts = new CancellationTokenSource();
        var pending = pool.InvokeAsync("f", Bytes("hold"), cancellationToken: cts.Token);
        await held.WaitForAsync(1).Live();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.Live());
        await fake.Vms.Single().Disposed.Task.Live();
        Assert.Equal(0, pool.GetAccountSettings().InFlight);
    }

    [Fact]
    public async Task DryRun_ValidatesOnly()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var r = await pool.InvokeAsync("f", Bytes("{}"), InvocationType.DryRun);
        Assert.Equal(InvokeStatus.Validated, r.Status);
        Assert.Equal(0, fake.CreateCalls.Value);
        await Assert.ThrowsAsync<FunctionNotFoundException>(() => pool.InvokeAsync("nope", Bytes("{}"), InvocationType.DryRun));
        await Assert.ThrowsAsync<RequestTooLargeException>(() =>
            pool.InvokeAsync("f", new byte[6 * 1024 * 1024 + 1], InvocationType.DryRun));
    }

    [Fact]
    public async Task PayloadLimits()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        await Assert.ThrowsAsync<RequestTooLargeException>(() => pool.InvokeAsync("f", new byte[6 * 1024 * 1024 + 1]));
        Assert.Null((await pool.InvokeAsync("f", new byte[6 * 1024 * 1024])).FunctionError);
        var e = await Assert.ThrowsAsync<RequestTooLargeException>(() => pool.InvokeAsync("f", new byte[256 * 1024 + 1], InvocationType.Event));
        Assert.Equal(PoolErrorKind.RequestTooLarge, e.Kind);
        Assert.Equal(InvokeStatus.Queued, (await pool.InvokeAsync("f", new byte[256 * 1024], InvocationType.Event)).Status);
    }

    [Fact]
    public async Task Validation_RejectsBadDefinitions()
    {
        var (pool, _, _) = Setup();
        await using var __ = pool;
        await Assert.ThrowsAsync<InvalidFunctionRequestException>(() => pool.CreateFunctionAsync(Def("f", memoryMib: 64)));
        await Assert.ThrowsAsync<InvalidFunctionRequestException>(() => pool.CreateFunctionAsync(Def("f", timeout: TimeSpan.FromMinutes(16))));
        await Assert.ThrowsAsync<InvalidFunctionRequestException>(() => pool.CreateFunctionAsync(Def("bad name")));
        await Assert.ThrowsAsync<InvalidFunctionRequestException>(() =>
            pool.CreateFunctionAsync(Def("f") with { LayerPaths = ["1", "2", "3", "4", "5", "6"] }));
        var info = await pool.CreateFunctionAsync(Def("f"));
        Assert.Equal("1", info.Definition.Version);
        await Assert.ThrowsAsync<FunctionExistsException>(() => pool.CreateFunctionAsync(Def("f")));
        await Assert.ThrowsAsync<InvalidFunctionRequestException>(() =>
            pool.UpdateFunctionConfigurationAsync("f", new FunctionConfigurationUpdate { MemoryMib = 20000 }));
        Assert.Equal("1", pool.GetFunction("f").Definition.Version); // a rejected update makes no version
        await Assert.ThrowsAsync<FunctionNotFoundException>(() => pool.UpdateFunctionCodeAsync("nope", "/x"));
    }

    [Fact]
    public async Task ProvisionedVms_AreFilled_AndReplacedAfterRecycling()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutProvisionedConcurrency("f", 2);
        await pool.QuiesceAsync().Live();
        Assert.Equal(2, fake.Created);
        var stats = pool.GetFunction("f").Stats;
        Assert.Equal(2, stats.ProvisionedReady);
        Assert.Equal(2, stats.IdleVms);
        Assert.Equal(0, stats.InFlight); // idle provisioned VMs use no concurrency
        Assert.Equal(0, pool.GetAccountSettings().InFlight);

        var warm = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.Warm, warm.StartKind); // initialized in advance
        Assert.Null(warm.InitDuration);

        // A provisioned VM times out (reported by the VM), then another crashes: each is replaced.
        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(VmInvokeStatus.Timeout));
        var timedOut = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(FunctionErrorKind.Unhandled, timedOut.FunctionError);
        await pool.QuiesceAsync().Live();
        Assert.Equal(3, fake.Created);
        Assert.Equal(1, fake.Vms.Count(v => v.DisposeCount == 1));
        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(VmInvokeStatus.Crashed));
        await pool.InvokeAsync("f", Bytes("{}"));
        await pool.QuiesceAsync().Live();
        Assert.Equal(4, fake.Created);
        Assert.Equal(2, fake.Vms.Count(v => v.DisposeCount == 1));
        stats = pool.GetFunction("f").Stats;
        Assert.Equal(2, stats.ProvisionedReady);
        Assert.Equal(2, stats.IdleVms);
        Assert.All(fake.Vms.Where(v => v.DisposeCount == 0), v => Assert.Equal(0, v.ShutdownCount));

        // Lowering provisioned concurrency demotes VMs to ordinary warm ones; none are created.
        pool.PutProvisionedConcurrency("f", 1);
        await pool.QuiesceAsync().Live();
        Assert.Equal(1, pool.GetFunction("f").Stats.ProvisionedReady);
        Assert.Equal(4, fake.Created);
    }

    [Fact]
    public async Task ProvisionedCreationFailure_IsRetriedAfterDelay()
    {
        var (pool, fake, time) = Setup(o => o with { ProvisionRetryDelay = TimeSpan.FromSeconds(10) });
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        int failures = 1;
        fake.OnCreate = (_, _) => Interlocked.Decrement(ref failures) >= 0
            ? throw new FunctionInitException("Runtime.InitError", "flaky")
            : Task.CompletedTask;
        pool.PutProvisionedConcurrency("f", 1);
        await time.WaitForTimerAsync(TimeSpan.FromSeconds(10)).Live();
        Assert.Equal(0, fake.Created);
        time.Advance(TimeSpan.FromSeconds(10));
        await fake.CreateCalls.WaitForAsync(2).Live();
        await pool.QuiesceAsync().Live();
        Assert.Equal(1, fake.Created);
        Assert.Equal(1, pool.GetFunction("f").Stats.ProvisionedReady);
    }

    [Fact]
    public async Task IdleReaping_ShutsDownOnlyOldNonProvisionedVms()
    {
        var (pool, fake, time) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutProvisionedConcurrency("f", 1);
        await pool.QuiesceAsync().Live();
        var provisioned = fake.Vms.Single();

        // Two at once: one takes the provisioned VM, the other gets an on-demand VM.
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new AsyncCounter();
        fake.Behavior = Holding(hold, held);
        var a = pool.InvokeAsync("f", Bytes("hold"));
        var b = pool.InvokeAsync("f", Bytes("hold"));
        await held.WaitForAsync(2).Live();
        hold.SetResult();
        await Task.WhenAll(a, b).Live();
        var onDemand = fake.Vms.Single(v => v != provisioned);
        Assert.Equal(2, pool.GetFunction("f").Stats.IdleVms);

        time.Advance(TimeSpan.FromMinutes(9)); // the reaper timer runs every minute; nothing is old enough
        await pool.QuiesceAsync().Live();
        Assert.Equal(0, await pool.ReapIdleAsync());
        Assert.Equal(0, onDemand.ShutdownCount);

        time.Advance(TimeSpan.FromMinutes(1)); // 10 min idle: the timer-driven reaper takes it
        await onDemand.Disposed.Task.Live();
        await pool.QuiesceAsync().Live();
        Assert.Equal(1, onDemand.ShutdownCount);
        Assert.Equal(0, provisioned.ShutdownCount + provisioned.DisposeCount);
        Assert.Equal(1, pool.GetFunction("f").Stats.IdleVms);

        time.Advance(TimeSpan.FromHours(1));
        await pool.QuiesceAsync().Live();
        Assert.Equal(0, provisioned.DisposeCount); // provisioned VMs are never reaped
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(provisioned.Id, Text(r.Payload));
        Assert.Equal(StartKind.Warm, r.StartKind);
    }

    [Fact]
    public async Task Update_DrainsOldVersion_IdleAtOnce_BusyAfterItsInvocation()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new AsyncCounter();
        fake.Behavior = Holding(hold, held);

        await pool.InvokeAsync("f", Bytes("go"));                  // vm-1 created, idle
        var busy = pool.InvokeAsync("f", Bytes("hold"));           // vm-1 busy
        await held.WaitForAsync(1).Live();
        await pool.InvokeAsync("f", Bytes("go"));                  // vm-2 created, idle
        var vm1 = fake.Vm("vm-1");
        var vm2 = fake.Vm("vm-2");

        var info = await pool.UpdateFunctionCodeAsync("f", "/code/f-v2.ext4");
        Assert.Equal("2", info.Definition.Version);
        await vm2.ShutdownCalled.Task.Live();                     // idle: shut down at once
        await pool.QuiesceAsync().Live();
        Assert.Equal(1, vm2.DisposeCount);
        Assert.Equal(0, vm1.ShutdownCount);                       // busy: untouched
        Assert.Equal(1, pool.GetFunction("f").Stats.DrainingVms);

        var fresh = await pool.InvokeAsync("f", Bytes("go"));     // the new version, on a new VM
        Assert.Equal("2", fresh.Version);
        Assert.Equal(StartKind.SnapshotCold, fresh.StartKind);
        var vm3 = fake.Vm(Text(fresh.Payload));
        Assert.Equal("/code/f-v2.ext4", vm3.Definition.CodeImagePath);
        Assert.Equal("2", vm3.Definition.Version);
        Assert.Empty(fake.Discards);                               // version 1 still has a VM

        hold.SetResult();
        var old = await busy.Live();
        Assert.Equal("1", old.Version);
        Assert.Null(old.FunctionError);                            // the running invocation finished normally
        await vm1.Disposed.Task.Live();
        await pool.QuiesceAsync().Live();
        Assert.Equal(1, vm1.ShutdownCount);
        Assert.Equal(0, vm3.ShutdownCount);
        Assert.Equal(("f", (string?)"2"), Assert.Single(fake.Discards));
        Assert.Equal(0, pool.GetFunction("f").Stats.DrainingVms);
        Assert.Equal(StartKind.Warm, (await pool.InvokeAsync("f", Bytes("go"))).StartKind);
    }

    [Fact]
    public async Task UpdateConfiguration_MakesNewVersionWithNewSettings()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        await pool.InvokeAsync("f", Bytes("{}"));
        var info = await pool.UpdateFunctionConfigurationAsync("f", new FunctionConfigurationUpdate
        {
            MemoryMib = 1024,
            Environment = new Dictionary<string, string> { ["A"] = "1" },
        });
        Assert.Equal("2", info.Definition.Version);
        Assert.Equal(1024, info.Definition.MemoryMib);
        Assert.Equal("index.handler", info.Definition.Handler);
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(1024, r.MemoryMib);
        Assert.Equal(StartKind.SnapshotCold, r.StartKind);
        Assert.Equal("1", fake.Vm(Text(r.Payload)).Definition.Environment["A"]);
        await fake.Vm("vm-1").Disposed.Task.Live();
    }

    [Fact]
    public async Task Update_ReplacesProvisionedVmsWithNewVersion()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutProvisionedConcurrency("f", 2);
        await pool.QuiesceAsync().Live();
        await pool.UpdateFunctionCodeAsync("f", "/code/v2.ext4");
        await pool.QuiesceAsync().Live();
        Assert.Equal(4, fake.Created);
        Assert.All(fake.Vms.Where(v => v.Definition.Version == "1"), v => Assert.Equal(1, v.ShutdownCount));
        Assert.All(fake.Vms.Where(v => v.Definition.Version == "2"), v => Assert.Equal(0, v.DisposeCount));
        Assert.Equal(2, pool.GetFunction("f").Stats.ProvisionedReady);
    }

    [Fact]
    public async Task Delete_DrainsThenForgets_InvokesDuringDeletionGetDeleting()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutReservedConcurrency("f", 5);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new AsyncCounter();
        fake.Behavior = Holding(hold, held);
        await pool.InvokeAsync("f", Bytes("go"));                  // vm-1 idle
        var busy = pool.InvokeAsync("f", Bytes("hold"));           // vm-1 busy
        await held.WaitForAsync(1).Live();
        await pool.InvokeAsync("f", Bytes("go"));                  // vm-2 idle
        var vm1 = fake.Vm("vm-1");
        var vm2 = fake.Vm("vm-2");

        var deleting = pool.DeleteFunctionAsync("f");
        await vm2.ShutdownCalled.Task.Live();
        Assert.False(deleting.IsCompleted);                        // vm-1's invocation is still running
        Assert.Equal(FunctionState.Deleting, pool.GetFunction("f").State);
        var e = await Assert.ThrowsAsync<FunctionDeletingException>(() => pool.InvokeAsync("f", Bytes("{}")));
        Assert.Equal(PoolErrorKind.Deleting, e.Kind);
        await Assert.ThrowsAsync<FunctionDeletingException>(() => pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event));
        await Assert.ThrowsAsync<FunctionDeletingException>(() => pool.UpdateFunctionCodeAsync("f", "/x"));
        await Assert.ThrowsAsync<FunctionDeletingException>(() => pool.CreateFunctionAsync(Def("f")));
        Assert.Equal(0, vm1.ShutdownCount);

        hold.SetResult();
        Assert.Null((await busy.Live()).FunctionError);
        await deleting.Live();
        Assert.Equal(1, vm1.ShutdownCount);
        Assert.Equal(1, vm1.DisposeCount);
        Assert.Contains(("f", (string?)null), fake.Discards);
        await Assert.ThrowsAsync<FunctionNotFoundException>(() => pool.InvokeAsync("f", Bytes("{}")));
        Assert.Throws<FunctionNotFoundException>(() => pool.GetFunction("f"));
        Assert.Empty(pool.ListFunctions());
        Assert.Equal(0, pool.GetAccountSettings().TotalReserved);

        // The name is free again.
        await pool.CreateFunctionAsync(Def("f"));
        Assert.Equal(StartKind.SnapshotCold, (await pool.InvokeAsync("f", Bytes("go"))).StartKind);
    }

    [Fact]
    public async Task Dispose_ShutsDownIdle_CancelsBusy_RejectsNewWork()
    {
        var (pool, fake, _) = Setup();
        await pool.CreateFunctionAsync(Def("f"));
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new AsyncCounter();
        fake.Behavior = Holding(hold, held);
        await pool.InvokeAsync("f", Bytes("go"));
        var busy = pool.InvokeAsync("f", Bytes("hold"));
        await held.WaitForAsync(1).Live();
        await pool.InvokeAsync("f", Bytes("go"));

        await pool.DisposeAsync().AsTask().Live();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => busy.Live());
        Assert.All(fake.Vms, v => Assert.Equal(1, v.DisposeCount));
        Assert.Equal(1, fake.Vm("vm-2").ShutdownCount);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => pool.InvokeAsync("f", Bytes("{}")));
        await pool.DisposeAsync(); // idempotent
    }
}
