using FireSharp.Devices.RateLimiting;

namespace FireSharp.Tests.Devices.RateLimiting;

/// <summary>The limiters' clock: one-shot timers on its own thread, disarmed by an infinite due time or Dispose.</summary>
public class LimiterClockTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public void A_timer_fires_once_on_the_clock_thread_not_before_its_due_time()
    {
        using var fired = new ManualResetEventSlim();
        string? thread = null;
        int count = 0;
        long start = LimiterClock.Instance.GetTimestamp();
        long firedAt = 0;
        using var timer = LimiterClock.Instance.CreateTimer(_ =>
        {
            firedAt = LimiterClock.Instance.GetTimestamp();
            thread = Thread.CurrentThread.Name;
            Interlocked.Increment(ref count);
            fired.Set();
        }, null, TimeSpan.FromMilliseconds(20), System.Threading.Timeout.InfiniteTimeSpan);
        Assert.True(fired.Wait(Timeout));
        Assert.Equal("rate-limiter-timers", thread);
        Assert.True(LimiterClock.Instance.GetElapsedTime(start, firedAt) >= TimeSpan.FromMilliseconds(19));
        Thread.Sleep(50);
        Assert.Equal(1, Volatile.Read(ref count));
    }

    [Fact]
    public void A_disarmed_or_disposed_timer_does_not_fire_and_a_rearmed_one_does()
    {
        int a = 0, b = 0;
        using var rearmed = new ManualResetEventSlim();
        var disarmed = LimiterClock.Instance.CreateTimer(_ => Interlocked.Increment(ref a), null, TimeSpan.FromMilliseconds(30), System.Threading.Timeout.InfiniteTimeSpan);
        var disposed = LimiterClock.Instance.CreateTimer(_ => Interlocked.Increment(ref b), null, TimeSpan.FromMilliseconds(30), System.Threading.Timeout.InfiniteTimeSpan);
        disarmed.Change(System.Threading.Timeout.InfiniteTimeSpan, System.Threading.Timeout.InfiniteTimeSpan);
        disposed.Dispose();
        using var later = LimiterClock.Instance.CreateTimer(_ => rearmed.Set(), null, TimeSpan.FromMilliseconds(80), System.Threading.Timeout.InfiniteTimeSpan);
        Assert.True(rearmed.Wait(Timeout)); // fires after the other two would have
        Assert.Equal(0, Volatile.Read(ref a));
        Assert.Equal(0, Volatile.Read(ref b));
        disarmed.Dispose();
    }

    [Fact]
    public void Periodic_timers_are_refused()
    {
        Assert.Throws<NotSupportedException>(() => LimiterClock.Instance.CreateTimer(_ => { }, null, TimeSpan.Zero, TimeSpan.FromSeconds(1)));
    }
}
