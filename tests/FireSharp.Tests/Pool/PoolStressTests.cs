using FireSharp.Pool;
using static FireSharp.Tests.Pool.PoolTestSupport;

namespace FireSharp.Tests.Pool;

/// <summary>Liveness under a storm of mixed operations: everything completes, nothing leaks, no VM is shared.</summary>
public class PoolStressTests
{
    [Fact]
    public async Task MixedConcurrentOperations_AllComplete_NothingLeaks()
    {
        var fake = new FakeFactory();
        fake.OnCreate = async (_, ct) =>
        {
            await Task.Yield();
            if (Random.Shared.Next(20) == 0) throw new FunctionInitException("Runtime.InitError", "flaky init");
        };
        fake.Behavior = async (vm, req, ct) =>
        {
            await Task.Yield();
            return (req.Payload.Length > 0 ? req.Payload.Span[0] : (byte)'s') switch
            {
                (byte)'h' => FakeFactory.Fail(VmInvokeStatus.FunctionError, unhandled: false),
                (byte)'c' => FakeFactory.Fail(VmInvokeStatus.Crashed),
                (byte)'t' => FakeFactory.Fail(VmInvokeStatus.Timeout),
                _ => FakeFactory.Ok(vm),
            };
        };
        var pool = new FunctionPool(fake, new PoolOptions
        {
            AccountConcurrencyLimit = 60,
            UnreservedMinimum = 10,
            TimeProvider = new ManualTimeProvider(),
            AsyncRetryDelays = [TimeSpan.Zero],
            AsyncQueueCapacity = 50,
            ProvisionRetryDelay = TimeSpan.Zero,
        });
        string[] names = ["f0", "f1", "f2", "f3", "f4"];
        foreach (var n in names) await pool.CreateFunctionAsync(Def(n));

        var rng = new Random(1234);
        var plan = Enumerable.Range(0, 500).Select(_ => (Op: rng.Next(100), Fn: names[rng.Next(names.Length)], Arg: rng.Next(40))).ToList();
        int unexpected = 0;
        string? firstUnexpected = null;
        var eventIds = new System.Collections.Concurrent.ConcurrentBag<string>();

        var ops = plan.Select(p => Task.Run(async () =>
        {
            try
            {
                switch (p.Op)
                {
                    case < 50:
                        await pool.InvokeAsync(p.Fn, Bytes("shct"[p.Arg % 4].ToString()));
                        break;
                    case < 60:
                        eventIds.Add((await pool.InvokeAsync(p.Fn, Bytes("sh"[p.Arg % 2].ToString()), InvocationType.Event)).RequestId);
                        break;
                    case < 65:
                        await pool.UpdateFunctionConfigurationAsync(p.Fn, new FunctionConfigurationUpdate { MemoryMib = 128 + p.Arg * 64 });
                        break;
                    case < 70:
                        await pool.UpdateFunctionCodeAsync(p.Fn, $"/code/{p.Fn}-{p.Arg}.ext4");
                        break;
                    case < 80:
                        pool.PutReservedConcurrency(p.Fn, p.Arg < 8 ? null : p.Arg - 8);
                        break;
                    case < 85:
                        pool.PutProvisionedConcurrency(p.Fn, p.Arg % 4);
                        break;
                    case < 90:
                        await pool.DeleteFunctionAsync(p.Fn);
                        await pool.CreateFunctionAsync(Def(p.Fn));
                        break;
                    case < 95:
                        _ = pool.ListFunctions();
                        _ = pool.GetAccountSettings();
                        _ = pool.GetFunction(p.Fn);
                        break;
                    default:
                        await pool.InvokeAsync(p.Fn, Bytes("{}"), InvocationType.DryRun);
                        break;
                }
            }
            catch (FunctionPoolException)
            {
                // Throttles, functions mid-delete or not found, invalid reservations: all legitimate outcomes here.
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref unexpected);
                Interlocked.CompareExchange(ref firstUnexpected, e.ToString(), null);
            }
        })).ToArray();

        await Task.WhenAll(ops).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(unexpected == 0, firstUnexpected);

        // Event invocations all reach a final state (success or failure after retries).
        foreach (var id in eventIds)
        {
            if (pool.GetAsyncInvocation(id) is null) continue;
            var record = await pool.WaitForAsyncInvocationAsync(id).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Contains(record.State, new[] { AsyncInvocationState.Succeeded, AsyncInvocationState.Failed });
        }
        await pool.QuiesceAsync().WaitAsync(TimeSpan.FromSeconds(60));

        var settings = pool.GetAccountSettings();
        Assert.Equal(0, settings.InFlight);
        Assert.True(settings.TotalReserved <= 60 - 10);
        foreach (var f in pool.ListFunctions())
        {
            Assert.Equal(0, f.Stats.InFlight);
            Assert.Equal(0, f.Stats.BusyVms);
            Assert.Equal(0, f.Stats.DrainingVms);
            Assert.Equal(f.ProvisionedConcurrency, f.Stats.ProvisionedReady);
        }
        Assert.Equal(0, fake.Violations);

        await pool.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.All(fake.Vms, v =>
        {
            Assert.Equal(1, v.DisposeCount);
            Assert.True(v.ShutdownCount <= 1);
        });
        Assert.True(fake.Created > 0);
    }
}
