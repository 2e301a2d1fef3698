using FireSharp.Devices.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace FireSharp.Tests.Devices.RateLimiting;

/// <summary>The token bucket and the limiter on a fake clock: refill, the one-time burst, both buckets together, the timer.</summary>
public class RateLimiterTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    private static (RateLimiter Limiter, FakeTimeProvider Clock, List<TimeSpan> Wakes) Make(RateLimiterSpec spec)
    {
        var clock = new FakeTimeProvider();
        var limiter = new RateLimiter(spec, clock);
        var wakes = new List<TimeSpan>();
        var start = clock.GetUtcNow();
        limiter.Wake = () => wakes.Add(clock.GetUtcNow() - start);
        return (limiter, clock, wakes);
    }

    [Fact]
    public void Bucket_starts_full_and_refills_in_proportion_to_time()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(new TokenBucketSpec(1000, 0, 100), clock.GetTimestamp(), clock.TimestampFrequency);
        Assert.Equal(BucketReduction.Success, bucket.Reduce(1000, clock.GetTimestamp(), out _));
        Assert.Equal(BucketReduction.Failure, bucket.Reduce(1, clock.GetTimestamp(), out long wait));
        Assert.Equal(clock.TimestampFrequency / 10_000, wait); // 1 token of 1000 per 100 ms = 0.1 ms
        clock.Advance(25 * Ms);
        Assert.Equal(BucketReduction.Failure, bucket.Reduce(251, clock.GetTimestamp(), out wait));
        Assert.Equal(BucketReduction.Success, bucket.Reduce(250, clock.GetTimestamp(), out _));
        clock.Advance(10_000 * Ms); // long idle: full, never more
        bucket.Refill(clock.GetTimestamp());
        Assert.Equal(1000, bucket.Budget);
    }

    [Fact]
    public void Failure_wait_is_exactly_when_the_request_fits()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(new TokenBucketSpec(1000, 0, 1000), clock.GetTimestamp(), clock.TimestampFrequency);
        Assert.Equal(BucketReduction.Success, bucket.Reduce(1000, clock.GetTimestamp(), out _));
        clock.Advance(100 * Ms);
        Assert.Equal(BucketReduction.Failure, bucket.Reduce(500, clock.GetTimestamp(), out long wait));
        Assert.Equal(400 * clock.TimestampFrequency / 1000, wait);
        clock.Advance(TimeSpan.FromTicks(wait * TimeSpan.TicksPerSecond / clock.TimestampFrequency - 1));
        Assert.Equal(BucketReduction.Failure, bucket.Reduce(500, clock.GetTimestamp(), out _));
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.Equal(BucketReduction.Success, bucket.Reduce(500, clock.GetTimestamp(), out _));
    }

    [Fact]
    public void One_time_burst_is_spent_first_and_never_refilled()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(new TokenBucketSpec(100, 300, 1000), clock.GetTimestamp(), clock.TimestampFrequency);
        Assert.Equal(BucketReduction.Success, bucket.Reduce(250, clock.GetTimestamp(), out _));
        Assert.Equal((100L, 50L), (bucket.Budget, bucket.OneTimeBurst));
        Assert.Equal(BucketReduction.Success, bucket.Reduce(150, clock.GetTimestamp(), out _)); // 50 burst + 100 budget
        Assert.Equal((0L, 0L), (bucket.Budget, bucket.OneTimeBurst));
        clock.Advance(TimeSpan.FromHours(1));
        bucket.Refill(clock.GetTimestamp());
        Assert.Equal((100L, 0L), (bucket.Budget, bucket.OneTimeBurst));
    }

    [Fact]
    public void A_refused_request_takes_nothing_not_even_the_burst()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(new TokenBucketSpec(100, 50, 1000), clock.GetTimestamp(), clock.TimestampFrequency);
        Assert.Equal(BucketReduction.Success, bucket.Reduce(100, clock.GetTimestamp(), out _)); // 50 burst + 50 budget
        Assert.Equal(BucketReduction.Failure, bucket.Reduce(60, clock.GetTimestamp(), out _));
        Assert.Equal((50L, 0L), (bucket.Budget, bucket.OneTimeBurst));
    }

    [Fact]
    public void Request_larger_than_the_bucket_goes_through_and_blocks_for_its_excess()
    {
        var (limiter, clock, wakes) = Make(new RateLimiterSpec(new TokenBucketSpec(1000, 0, 100), null));
        Assert.True(limiter.TryConsume(400));
        Assert.True(limiter.TryConsume(2600)); // 600 left: 2000 over, 200 ms to refill
        Assert.True(limiter.IsBlocked);
        Assert.False(limiter.TryConsume(1));
        clock.Advance(199 * Ms);
        Assert.Empty(wakes);
        Assert.False(limiter.TryConsume(1));
        clock.Advance(Ms);
        Assert.Equal([200 * Ms], wakes);
        Assert.True(limiter.TryConsume(1));
    }

    [Fact]
    public void Refused_request_arms_the_timer_for_when_it_fits_and_wakes_once()
    {
        var (limiter, clock, wakes) = Make(new RateLimiterSpec(new TokenBucketSpec(64 * 1024, 0, 1000), null));
        Assert.True(limiter.TryConsume(60 * 1024));
        Assert.False(limiter.TryConsume(8 * 1024)); // 4 KiB short: 62.5 ms, 63 ms rounded up to the timer's ms
        Assert.Equal(1, limiter.Deferred);
        clock.Advance(62 * Ms);
        Assert.Empty(wakes);
        clock.Advance(Ms);
        Assert.Equal([63 * Ms], wakes);
        Assert.True(limiter.TryConsume(8 * 1024));
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Single(wakes);
    }

    [Fact]
    public void Ops_and_bandwidth_together_each_limit_and_a_refusal_takes_neither()
    {
        // 10 ops per 100 ms, 1000 bytes per 100 ms.
        var (limiter, clock, wakes) = Make(new RateLimiterSpec(new TokenBucketSpec(1000, 0, 100), new TokenBucketSpec(10, 0, 100)));
        for (int i = 0; i < 10; i++) Assert.True(limiter.TryConsume(10)); // ops run out first: 100 bytes used
        Assert.False(limiter.TryConsume(10));
        clock.Advance(10 * Ms);                                            // one op back
        Assert.Single(wakes);
        Assert.True(limiter.TryConsume(900));                              // bytes: 1000 (900 left, 100 refilled, capped)
        clock.Advance(10 * Ms);                                            // one op and 100 bytes back
        Assert.False(limiter.TryConsume(500));                             // bytes short: the op is given back
        clock.Advance(40 * Ms);
        Assert.Equal(2, wakes.Count);
        Assert.True(limiter.TryConsume(500));                              // 600 bytes by now
        var state = limiter.Save();
        Assert.Equal(100, state.Bandwidth!.Budget);
        Assert.Equal(4, state.Ops!.Budget);                                // the refused request's op was given back: 5 refilled, 1 taken
    }

    [Fact]
    public void Unlimited_never_refuses_and_never_arms_a_timer()
    {
        var (limiter, clock, wakes) = Make(new RateLimiterSpec(null, null));
        for (int i = 0; i < 1000; i++) Assert.True(limiter.TryConsume(long.MaxValue / 2));
        Assert.Null(limiter.Spec);
        Assert.Empty(wakes);
    }

    [Fact]
    public void Update_replaces_the_buckets_and_wakes_a_blocked_device()
    {
        var (limiter, _, wakes) = Make(new RateLimiterSpec(new TokenBucketSpec(100, 0, 1000), null));
        Assert.True(limiter.TryConsume(100));
        Assert.False(limiter.TryConsume(100));
        limiter.Update(new RateLimiterSpec(new TokenBucketSpec(1000, 0, 1000), null));
        Assert.Single(wakes);
        Assert.False(limiter.IsBlocked);
        Assert.True(limiter.TryConsume(1000));
        limiter.Update(null);
        Assert.Null(limiter.Spec);
        Assert.True(limiter.TryConsume(1L << 40));
    }

    [Fact]
    public void Save_and_restore_keep_the_buckets_and_what_is_left()
    {
        var (limiter, clock, _) = Make(new RateLimiterSpec(new TokenBucketSpec(1000, 500, 100), new TokenBucketSpec(10, 0, 100)));
        Assert.True(limiter.TryConsume(700)); // from the burst (500) and the budget (200)
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) RateLimiterStateCodec.Write(w, limiter.Save());
        ms.Position = 0;
        var state = RateLimiterStateCodec.Read(new BinaryReader(ms));
        Assert.Equal(new BucketState(new TokenBucketSpec(1000, 500, 100), 800, 0), state.Bandwidth);
        Assert.Equal(new BucketState(new TokenBucketSpec(10, 0, 100), 9, 0), state.Ops);

        var clock2 = new FakeTimeProvider(clock.GetUtcNow() + TimeSpan.FromDays(3));
        using var restored = new RateLimiter(null, clock2);
        restored.Restore(state);
        Assert.Equal(limiter.Spec, restored.Spec);
        Assert.True(restored.TryConsume(800));
        Assert.False(restored.TryConsume(1));
    }

    [Theory]
    [InlineData(0, 0, 100, "size")]
    [InlineData(-1, 0, 100, "size")]
    [InlineData(100, -5, 100, "one_time_burst")]
    [InlineData(100, 0, 0, "refill_time_ms")]
    [InlineData(100, 0, -1, "refill_time_ms")]
    [InlineData(100, 0, TokenBucketSpec.MaxRefillTimeMs + 1, "refill_time_ms")]
    public void Bad_buckets_are_refused_with_the_field(long size, long burst, long refill, string field)
    {
        var e = Assert.Throws<RateLimiterConfigException>(() =>
            new RateLimiterSpec(null, new TokenBucketSpec(size, burst, refill)).Validate("drive[0].rate_limiter"));
        Assert.Equal("drive[0].rate_limiter.ops." + field, e.Field);
        Assert.Throws<RateLimiterConfigException>(() => new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(size, burst, refill), null)));
    }

    [Fact]
    public void Huge_sizes_do_not_overflow()
    {
        var (limiter, clock, _) = Make(new RateLimiterSpec(new TokenBucketSpec(long.MaxValue, long.MaxValue, TokenBucketSpec.MaxRefillTimeMs), null));
        Assert.True(limiter.TryConsume(long.MaxValue));
        Assert.True(limiter.TryConsume(long.MaxValue));
        clock.Advance(TimeSpan.FromDays(400));
        Assert.True(limiter.TryConsume(long.MaxValue));
        Assert.False(limiter.TryConsume(1));
    }

    [Fact]
    public void Corrupt_state_is_invalid_data()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write(true);
            w.Write(0L); w.Write(0L); w.Write(100L); w.Write(0L); w.Write(0L);
            w.Write(false);
        }
        ms.Position = 0;
        Assert.Throws<InvalidDataException>(() => RateLimiterStateCodec.Read(new BinaryReader(ms)));
    }
}
