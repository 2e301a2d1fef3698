using System.Diagnostics;
using FireSharp.Devices;

namespace FireSharp.Tests.Devices;

public sealed class GuestWarningThrottleTests
{
    [Fact]
    public void First_is_logged_then_one_per_interval_with_the_count_left_out()
    {
        long now = 1_000;
        var throttle = new GuestWarningThrottle(TimeSpan.FromSeconds(10), () => now);

        Assert.True(throttle.ShouldLog(out long suppressed));
        Assert.Equal(0, suppressed);
        for (int i = 0; i < 99; i++)
        {
            now += Stopwatch.Frequency / 100; // 99 more within the next second
            Assert.False(throttle.ShouldLog(out _));
        }

        now += 10 * Stopwatch.Frequency;
        Assert.True(throttle.ShouldLog(out suppressed));
        Assert.Equal(99, suppressed);
        Assert.False(throttle.ShouldLog(out _));
        Assert.Equal(102, throttle.Occurrences);

        now += 10 * Stopwatch.Frequency;
        Assert.True(throttle.ShouldLog(out suppressed));
        Assert.Equal(1, suppressed);
    }
}
