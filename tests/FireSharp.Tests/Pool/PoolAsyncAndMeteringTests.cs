using CsCheck;
using FireSharp.Pool;
using static FireSharp.Tests.Pool.PoolTestSupport;

namespace FireSharp.Tests.Pool;

/// <summary>Event invocations (queue, retries, history) and metering (billed duration, GB-seconds, stats).</summary>
public class PoolAsyncAndMeteringTests
{
    private static (FunctionPool Pool, FakeFactory Fake, ManualTimeProvider Time) Setup(Func<PoolOptions, PoolOptions>? tweak = null)
    {
        var fake = new FakeFactory();
        var time = new ManualTimeProvider();
        var options = new PoolOptions { AccountConcurrencyLimit = 100, UnreservedMinimum = 10, TimeProvider = time };
        return (new FunctionPool(fake, tweak?.Invoke(options) ?? options), fake, time);
    }

    [Fact]
    public async Task Event_FailingFunction_IsRetriedTwice_WithLambdasDelays()
    {
        var (pool, fake, time) = Setup(); // default delays: 1 min, then 2 min
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        fake.Behavior = (_, _, _) => Task.FromResult(FakeFactory.Fail(VmInvokeStatus.FunctionError, unhandled: false, "Boom"));

        var accepted = await pool.InvokeAsync("f", Bytes("{\"n\":1}"), InvocationType.Event);
        Assert.Equal(InvokeStatus.Queued, accepted.Status);
        Assert.NotNull(pool.GetAsyncInvocation(accepted.RequestId));

        await time.WaitForTimerAsync(TimeSpan.FromMinutes(1)).Live();   // first attempt failed, retry 1 pending
        Assert.Equal(1, fake.Invocations.Value);
        Assert.Equal(AsyncInvocationState.RetryPending, pool.GetAsyncInvocation(accepted.RequestId)!.State);
        time.Advance(TimeSpan.FromMinutes(1));
        await time.WaitForTimerAsync(TimeSpan.FromMinutes(2)).Live();   // second attempt failed, retry 2 pending
        Assert.Equal(2, fake.Invocations.Value);
        time.Advance(TimeSpan.FromMinutes(2));

        var record = await pool.WaitForAsyncInvocationAsync(accepted.RequestId).Live();
        Assert.Equal(AsyncInvocationState.Failed, record.State);
        Assert.Equal(3, record.Attempts);
        Assert.Equal(FunctionErrorKind.Handled, record.LastResult!.FunctionError);
        Assert.Equal("Boom", record.LastResult.ErrorType);
        Assert.Equal(3, fake.Invocations.Value);
        // The same request id on every attempt, and the payload as sent.
        var requests = fake.Vms.SelectMany(v => v.Requests).ToList();
        Assert.All(requests, r => Assert.Equal(accepted.RequestId, r.RequestId));
        Assert.All(requests, r => Assert.Equal("{\"n\":1}", Text(r.Payload)));
        var stats = pool.GetFunction("f").Stats;
        Assert.Equal(1, stats.AsyncAccepted);
        Assert.Equal(2, stats.AsyncRetries);
        Assert.Equal(1, stats.AsyncFailed);
        Assert.Equal(0, stats.AsyncSucceeded);
        Assert.Equal(3, stats.Invocations);
        Assert.Equal(3, stats.Errors);
    }

    [Fact]
    public async Task Event_SucceedsOnRetry()
    {
        var (pool, fake, _) = Setup(o => o with { AsyncRetryDelays = [TimeSpan.Zero] });
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        int calls = 0;
        fake.Behavior = (vm, _, _) => Task.FromResult(Interlocked.Increment(ref calls) == 1
            ? FakeFactory.Fail(VmInvokeStatus.Crashed)
            : FakeFactory.Ok(vm));
        var accepted = await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event);
        var record = await pool.WaitForAsyncInvocationAsync(accepted.RequestId).Live();
        Assert.Equal(AsyncInvocationState.Succeeded, record.State);
        Assert.Equal(2, record.Attempts);
        Assert.Null(record.LastResult!.FunctionError);
        Assert.NotNull(record.FinishedAt);
        Assert.Equal(1, pool.GetFunction("f").Stats.AsyncSucceeded);
    }

    [Fact]
    public async Task Event_ThrottledAttempts_AreRetried_ThenFail()
    {
        var (pool, fake, _) = Setup(o => o with { AsyncRetryDelays = [TimeSpan.Zero] });
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        pool.PutReservedConcurrency("f", 0);
        var accepted = await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event);
        var record = await pool.WaitForAsyncInvocationAsync(accepted.RequestId).Live();
        Assert.Equal(AsyncInvocationState.Failed, record.State);
        Assert.Equal(3, record.Attempts);
        Assert.Null(record.LastResult);
        Assert.Contains("ReservedConcurrency", record.LastError);
        Assert.Equal(3, pool.GetFunction("f").Stats.Throttles);
        Assert.Equal(0, fake.CreateCalls.Value);
    }

    [Fact]
    public async Task Event_FullQueue_Throttles()
    {
        var (pool, fake, _) = Setup(o => o with { AsyncWorkers = 1, AsyncQueueCapacity = 2 });
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        fake.Behavior = async (vm, _, ct) => { await gate.Task.WaitAsync(ct); return FakeFactory.Ok(vm); };
        var first = await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event);
        await fake.Invocations.WaitForAsync(1).Live();                      // the only worker is busy with it
        var queued = new[]
        {
            await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event),
            await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event),
        };
        Assert.Equal(AsyncInvocationState.Queued, pool.GetAsyncInvocation(queued[1].RequestId)!.State);
        Assert.Equal(2, pool.GetAccountSettings().AsyncQueued);
        var e = await Assert.ThrowsAsync<FunctionThrottledException>(() => pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event));
        Assert.Equal(ThrottleReason.AsyncQueueFull, e.Reason);
        Assert.Equal(2, e.Limit);

        gate.SetResult();
        foreach (var id in queued.Select(q => q.RequestId).Append(first.RequestId))
            Assert.Equal(AsyncInvocationState.Succeeded, (await pool.WaitForAsyncInvocationAsync(id).Live()).State);
        Assert.Equal(1, fake.Created); // one worker: one VM, reused
    }

    [Fact]
    public async Task Event_History_IsBounded()
    {
        var (pool, _, _) = Setup(o => o with { AsyncHistory = 2, AsyncWorkers = 1 });
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        var ids = new List<string>();
        for (int i = 0; i < 4; i++)
        {
            var r = await pool.InvokeAsync("f", Bytes("{}"), InvocationType.Event);
            await pool.WaitForAsyncInvocationAsync(r.RequestId).Live();
            ids.Add(r.RequestId);
        }
        Assert.Null(pool.GetAsyncInvocation(ids[0]));
        Assert.Null(pool.GetAsyncInvocation(ids[1]));
        Assert.Equal(AsyncInvocationState.Succeeded, pool.GetAsyncInvocation(ids[3])!.State);
        Assert.Throws<KeyNotFoundException>(() => { _ = pool.WaitForAsyncInvocationAsync(ids[0]); });
    }

    [Theory]
    [InlineData(10_001, 512, 2, "0.001")]          // 1.0001 ms → 2 ms × 0.5 GB
    [InlineData(50_000, 128, 5, "0.000625")]       // exactly 5 ms × 0.125 GB
    [InlineData(1, 10240, 1, "0.01")]              // 100 ns → 1 ms × 10 GB
    [InlineData(30_000_000, 1536, 3000, "4.5")]    // 3 s × 1.5 GB
    public async Task GbSeconds_BilledDurationRoundedUpToMs_TimesMemory(long durationTicks, int memoryMib, long billedMs, string gbSeconds)
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f", memoryMib: memoryMib));
        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm, TimeSpan.FromTicks(durationTicks)) with { MaxMemoryUsedBytes = (3 << 20) + 1 });
        var r1 = await pool.InvokeAsync("f", Bytes("{}"));
        var r2 = await pool.InvokeAsync("f", Bytes("{}"));
        decimal expected = decimal.Parse(gbSeconds, System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(TimeSpan.FromTicks(durationTicks), r1.Duration);
        Assert.Equal(TimeSpan.FromMilliseconds(billedMs), r1.BilledDuration);
        Assert.Equal(expected, r1.GbSeconds);
        Assert.Equal(memoryMib, r1.MemoryMib);
        Assert.Equal(4, r1.MaxMemoryUsedMib);
        Assert.Equal(2 * expected, pool.GetFunction("f").Stats.GbSeconds);
        Assert.Equal(2 * expected, pool.GetAccountSettings().GbSeconds);
        Assert.Equal(r1.GbSeconds, r2.GbSeconds);
    }

    [Fact]
    public void BilledDuration_Property_WholeMillisecondsAtMostOneAbove()
    {
        Gen.Long[0, TimeSpan.FromMinutes(15).Ticks].Sample(ticks =>
        {
            var d = TimeSpan.FromTicks(ticks);
            var billed = Metering.BilledDuration(d);
            return billed >= d
                   && billed - d < TimeSpan.FromMilliseconds(1)
                   && billed.Ticks % TimeSpan.TicksPerMillisecond == 0
                   && Metering.GbSeconds(billed, 1024) * 1000m == billed.Ticks / TimeSpan.TicksPerMillisecond;
        });
    }

    [Fact]
    public async Task Stats_CountStartsErrorsAndPercentiles()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        int n = 0;
        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm, TimeSpan.FromMilliseconds(Interlocked.Increment(ref n))));
        for (int i = 0; i < 100; i++) await pool.InvokeAsync("f", Bytes("{}"));
        var s = pool.GetFunction("f").Stats;
        Assert.Equal(100, s.Invocations);
        Assert.Equal(1, s.SnapshotColdStarts);
        Assert.Equal(99, s.WarmStarts);
        Assert.Equal(0, s.Errors);
        Assert.Equal(TimeSpan.FromMilliseconds(50), s.DurationP50);
        Assert.Equal(TimeSpan.FromMilliseconds(99), s.DurationP99);
        var account = pool.GetAccountSettings();
        Assert.Equal(100, account.Invocations);
        Assert.Equal(1, account.FunctionCount);
        Assert.Equal(100, account.ConcurrencyLimit);
    }

    [Fact]
    public async Task LogTail_IsTheLast4KiBOfUtf8()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("f"));
        string log = "start " + new string('x', 10_000) + "end";
        fake.Behavior = (vm, _, _) => Task.FromResult(FakeFactory.Ok(vm) with { LogTail = log });
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(log[^4096..], r.LogTail);

        string wide = "a" + new string('é', 3000) + "😀😀"; // 2-byte chars, then 4-byte surrogate pairs
        var tail = InvokeResults.Tail(wide);
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(tail) <= 4096);
        Assert.EndsWith("😀😀", tail);
        Assert.Equal(wide[^tail.Length..], tail);
        Assert.Equal(4096, System.Text.Encoding.UTF8.GetByteCount(tail)); // 8 + 2044 × 2
        Assert.Equal("short", InvokeResults.Tail("short"));
    }

    [Fact]
    public async Task BootColdStart_IsReportedAsSuch()
    {
        var (pool, fake, _) = Setup();
        await using var __ = pool;
        fake.CreatedAs = StartKind.BootCold;
        await pool.CreateFunctionAsync(Def("f") with { SnapshotStart = false });
        var r = await pool.InvokeAsync("f", Bytes("{}"));
        Assert.Equal(StartKind.BootCold, r.StartKind);
        Assert.Equal(1, pool.GetFunction("f").Stats.BootColdStarts);
    }
}
