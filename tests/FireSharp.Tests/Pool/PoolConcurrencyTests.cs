using System.Collections.Concurrent;
using CsCheck;
using FireSharp.Pool;
using static FireSharp.Tests.Pool.PoolTestSupport;

namespace FireSharp.Tests.Pool;

/// <summary>Admission: reserved, unreserved and account limits with exact counts under many concurrent invokes.</summary>
public class PoolConcurrencyTests
{
    private static (FunctionPool Pool, FakeFactory Fake, TaskCompletionSource Gate) Setup(int limit, int unreservedMinimum)
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var fake = new FakeFactory();
        fake.Behavior = async (vm, _, ct) => { await gate.Task.WaitAsync(ct); return FakeFactory.Ok(vm); };
        var pool = new FunctionPool(fake, new PoolOptions
        {
            AccountConcurrencyLimit = limit,
            UnreservedMinimum = unreservedMinimum,
            TimeProvider = new ManualTimeProvider(),
        });
        return (pool, fake, gate);
    }

    private sealed class Tally(AsyncCounter arrived)
    {
        /// <summary>Shared: counts throttles here and VM arrivals in the fake's behaviour.</summary>
        public readonly AsyncCounter Arrived = arrived;
        public readonly ConcurrentBag<FunctionThrottledException> Throttles = [];
        public readonly ConcurrentBag<InvokeResult> Results = [];
    }

    private static Task Invoke(FunctionPool pool, string name, Tally tally) => Task.Run(async () =>
    {
        try
        {
            tally.Results.Add(await pool.InvokeAsync(name, Bytes("{}")));
        }
        catch (FunctionThrottledException e)
        {
            tally.Throttles.Add(e);
            tally.Arrived.Increment();
        }
    });

    [Fact]
    public async Task ReservedFunction_500ConcurrentInvokes_Exactly30Admitted()
    {
        var (pool, fake, gate) = Setup(limit: 100, unreservedMinimum: 10);
        await using var _ = pool;
        await pool.CreateFunctionAsync(Def("a"));
        pool.PutReservedConcurrency("a", 30);
        var tally = new Tally(new AsyncCounter());
        // Every admitted invocation reaches the fake VM (and blocks at the gate); every other one is throttled.
        fake.Behavior = async (vm, _, ct) => { tally.Arrived.Increment(); await gate.Task.WaitAsync(ct); return FakeFactory.Ok(vm); };

        var all = Enumerable.Range(0, 500).Select(_ => Invoke(pool, "a", tally)).ToArray();
        await tally.Arrived.WaitForAsync(500).Live();

        Assert.Equal(30, fake.Invocations.Value);
        Assert.Equal(470, tally.Throttles.Count);
        Assert.All(tally.Throttles, t =>
        {
            Assert.Equal(ThrottleReason.ReservedConcurrency, t.Reason);
            Assert.Equal(30, t.Limit);
            Assert.True(t.RetryAfter > TimeSpan.Zero);
        });
        var settings = pool.GetAccountSettings();
        Assert.Equal(30, settings.InFlight);
        Assert.Equal(70, settings.UnreservedConcurrency);
        Assert.Equal(70, settings.UnreservedAvailable);
        Assert.Equal(30, pool.GetFunction("a").Stats.InFlight);

        gate.SetResult();
        await Task.WhenAll(all).Live();
        Assert.Equal(30, tally.Results.Count);
        Assert.All(tally.Results, r => Assert.Null(r.FunctionError));
        var stats = pool.GetFunction("a").Stats;
        Assert.Equal(30, stats.Invocations);
        Assert.Equal(470, stats.Throttles);
        Assert.Equal(0, stats.InFlight);
        Assert.Equal(30, fake.Created);         // each concurrent invocation needed its own VM
        Assert.Equal(30, stats.IdleVms);        // all kept warm
        Assert.Equal(0, fake.Violations);
        Assert.Equal(0, pool.GetAccountSettings().InFlight);
    }

    [Fact]
    public async Task MixedFunctions_ReservedAndUnreservedPools_ExactCounts()
    {
        var (pool, fake, gate) = Setup(limit: 100, unreservedMinimum: 10);
        await using var _ = pool;
        foreach (var n in new[] { "a", "b", "c", "d" }) await pool.CreateFunctionAsync(Def(n));
        pool.PutReservedConcurrency("a", 30);
        pool.PutReservedConcurrency("b", 20);
        var arrived = new AsyncCounter();
        var tallies = new[] { "a", "b", "c", "d" }.ToDictionary(n => n, _ => new Tally(arrived));
        var admitted = new ConcurrentDictionary<string, int>();
        fake.Behavior = async (vm, _, ct) =>
        {
            admitted.AddOrUpdate(vm.Definition.Name, 1, (_, v) => v + 1);
            arrived.Increment();
            await gate.Task.WaitAsync(ct);
            return FakeFactory.Ok(vm);
        };

        var all = new List<Task>();
        for (int i = 0; i < 200; i++)
            foreach (var n in tallies.Keys)
                all.Add(Invoke(pool, n, tallies[n]));
        // All 800 have either reached a VM or been throttled.
        await arrived.WaitForAsync(800).Live();

        Assert.Equal(30, admitted.GetValueOrDefault("a"));
        Assert.Equal(20, admitted.GetValueOrDefault("b"));
        Assert.Equal(50, admitted.GetValueOrDefault("c") + admitted.GetValueOrDefault("d"));
        Assert.Equal(170, tallies["a"].Throttles.Count);
        Assert.Equal(180, tallies["b"].Throttles.Count);
        Assert.Equal(350, tallies["c"].Throttles.Count + tallies["d"].Throttles.Count);
        Assert.All(tallies["a"].Throttles.Concat(tallies["b"].Throttles), t => Assert.Equal(ThrottleReason.ReservedConcurrency, t.Reason));
        Assert.All(tallies["c"].Throttles.Concat(tallies["d"].Throttles), t =>
        {
            Assert.Equal(ThrottleReason.UnreservedConcurrency, t.Reason);
            Assert.Equal(50, t.Limit);
        });
        var settings = pool.GetAccountSettings();
        Assert.Equal(100, settings.InFlight);
        Assert.Equal(50, settings.TotalReserved);
        Assert.Equal(0, settings.UnreservedAvailable);
        Assert.Equal(700, settings.Throttles);

        gate.SetResult();
        await Task.WhenAll(all).Live();
        Assert.Equal(100, tallies.Values.Sum(t => t.Results.Count));
        Assert.Equal(0, pool.GetAccountSettings().InFlight);
        Assert.Equal(0, fake.Violations);
    }

    [Fact]
    public async Task ReservedZero_ThrottlesEverything()
    {
        var (pool, fake, gate) = Setup(limit: 100, unreservedMinimum: 10);
        gate.SetResult();
        await using var _ = pool;
        await pool.CreateFunctionAsync(Def("a"));
        pool.PutReservedConcurrency("a", 0);
        var e = await Assert.ThrowsAsync<FunctionThrottledException>(() => pool.InvokeAsync("a", Bytes("{}")));
        Assert.Equal(ThrottleReason.ReservedConcurrency, e.Reason);
        Assert.Equal(0, e.Limit);
        Assert.Equal(0, fake.CreateCalls.Value);

        pool.PutReservedConcurrency("a", null); // back to the unreserved pool
        var r = await pool.InvokeAsync("a", Bytes("{}"));
        Assert.Null(r.FunctionError);
    }

    [Fact]
    public async Task Reservations_LeaveTheUnreservedMinimum()
    {
        var (pool, _, gate) = Setup(limit: 100, unreservedMinimum: 10);
        gate.SetResult();
        await using var __ = pool;
        await pool.CreateFunctionAsync(Def("a"));
        await pool.CreateFunctionAsync(Def("b"));
        pool.PutReservedConcurrency("a", 60);
        var e = Assert.Throws<InvalidFunctionRequestException>(() => pool.PutReservedConcurrency("b", 31));
        Assert.Equal("ReservedConcurrency", e.Field);
        pool.PutReservedConcurrency("b", 30);
        Assert.Equal(10, pool.GetAccountSettings().UnreservedConcurrency);
        pool.PutReservedConcurrency("a", 70 - 10); // re-putting the same value is fine
        Assert.Throws<InvalidFunctionRequestException>(() => pool.PutReservedConcurrency("a", 61));
        Assert.Throws<InvalidFunctionRequestException>(() => pool.PutReservedConcurrency("a", -1));
        // Provisioned concurrency may not exceed the reservation, and a reservation may not go below it.
        Assert.Throws<InvalidFunctionRequestException>(() => pool.PutProvisionedConcurrency("b", 31));
        pool.PutProvisionedConcurrency("b", 2);
        Assert.Throws<InvalidFunctionRequestException>(() => pool.PutReservedConcurrency("b", 1));
        // Deleting a function frees its reservation.
        pool.PutProvisionedConcurrency("b", 0);
        await pool.DeleteFunctionAsync("b").Live();
        Assert.Equal(60, pool.GetAccountSettings().TotalReserved);
    }

    /// <summary>
    /// Random sequences of acquire/release/set-reservation against the ledger: every admission respects the function's
    /// reservation, the unreserved pool and the account limit, and the ledger's counters equal a model recomputed
    /// from scratch.
    /// </summary>
    [Fact]
    public void Ledger_RandomSequences_NeverExceedLimits()
    {
        const int Functions = 4;
        var genOp = Gen.Select(Gen.Int[0, 9], Gen.Int[0, Functions - 1], Gen.Int[-1, 40]);
        Gen.Select(Gen.Int[1, 60], Gen.Int[0, 20], genOp.Array[1, 300]).Sample((limit, minimum, ops) =>
        {
            minimum = Math.Min(minimum, limit);
            var ledger = new ConcurrencyLedger(limit, minimum);
            var entries = Enumerable.Range(0, Functions).Select(_ => ledger.Add(null)).ToArray();
            var inFlight = new int[Functions];
            var reserved = new int?[Functions];
            foreach (var (kind, f, value) in ops)
            {
                if (kind <= 5)
                {
                    bool ok = ledger.TryAcquire(entries[f], out var reason, out int reportedLimit);
                    int total = inFlight.Sum();
                    int sumReserved = reserved.Sum(r => r ?? 0);
                    int unreservedInFlight = Enumerable.Range(0, Functions).Where(i => reserved[i] is null).Sum(i => inFlight[i]);
                    bool expected = reserved[f] is int r
                        ? inFlight[f] < r && total < limit
                        : unreservedInFlight < limit - sumReserved && total < limit;
                    if (ok != expected) return false;
                    if (ok)
                    {
                        inFlight[f]++;
                        if (inFlight.Sum() > limit) return false;
                        if (reserved[f] is int rr && inFlight[f] > rr) return false;
                        if (reserved[f] is null && unreservedInFlight + 1 > limit - sumReserved) return false;
                    }
                    else if (reportedLimit < 0) return false;
                }
                else if (kind <= 8)
                {
                    if (inFlight[f] > 0) { ledger.Release(entries[f]); inFlight[f]--; }
                }
                else
                {
                    int? want = value < 0 ? null : value;
                    int others = reserved.Where((_, i) => i != f).Sum(x => x ?? 0);
                    bool valid = want is null || (want >= 0 && others + want <= limit - minimum);
                    try { ledger.SetReserved(entries[f], want); if (!valid) return false; reserved[f] = want; }
                    catch (InvalidFunctionRequestException) { if (valid) return false; }
                }
                int modelReservedInFlight = Enumerable.Range(0, Functions).Where(i => reserved[i] is not null).Sum(i => inFlight[i]);
                if (ledger.TotalInFlight != inFlight.Sum() || ledger.ReservedInFlight != modelReservedInFlight
                    || ledger.TotalReserved != reserved.Sum(x => x ?? 0)
                    || ledger.TotalReserved > limit - minimum)
                    return false;
            }
            return true;
        }, iter: 2000);
    }
}
