using CsCheck;
using FireSharp.Devices.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace FireSharp.Tests.Devices.RateLimiting;

/// <summary>Properties of the token bucket and the limiter over random configurations and request sequences.</summary>
public class TokenBucketPropertyTests
{
    private static readonly Gen<TokenBucketSpec> GenSpec =
        Gen.Select(Gen.Long[1, 1L << 40], Gen.Long[0, 1L << 40], Gen.Long[1, 10_000], (s, b, r) => new TokenBucketSpec(s, b, r));

    // (advance in µs, tokens asked as a fraction of the size in 1/1000ths: up to 3x the bucket).
    private static readonly Gen<(int AdvanceUs, int Permille)[]> GenSteps =
        Gen.Select(Gen.Int[0, 200_000], Gen.Int[0, 3000]).Array[1, 60];

    [Fact]
    public void Never_grants_more_than_burst_plus_size_plus_what_time_earned_and_budget_stays_in_range()
    {
        Gen.Select(GenSpec, GenSteps).Sample((spec, steps) =>
        {
            var clock = new FakeTimeProvider();
            var bucket = new TokenBucket(spec, clock.GetTimestamp(), clock.TimestampFrequency);
            long start = clock.GetTimestamp();
            Int128 granted = 0, largest = 0;
            foreach (var (advanceUs, permille) in steps)
            {
                clock.Advance(TimeSpan.FromMicroseconds(advanceUs));
                long tokens = (long)((Int128)spec.Size * permille / 1000);
                var r = bucket.Reduce(tokens, clock.GetTimestamp(), out long wait);
                if (r != BucketReduction.Failure) granted += tokens;
                if (r == BucketReduction.OverConsumption) largest = Int128.Max(largest, tokens);
                if (r == BucketReduction.Success && wait != 0) return false;
                if (r != BucketReduction.Success && wait <= 0) return false;
                if (bucket.Budget < 0 || bucket.Budget > spec.Size || bucket.OneTimeBurst < 0 || bucket.OneTimeBurst > spec.OneTimeBurst) return false;
            }
            long elapsed = clock.GetTimestamp() - start;
            Int128 earned = (Int128)elapsed * spec.Size / ((Int128)spec.RefillTimeMs * clock.TimestampFrequency / 1000) + 1;
            // An over-consumed request may overdraw by itself: the limiter then blocks for it.
            return granted <= spec.OneTimeBurst + spec.Size + earned + largest * steps.Length;
        });
    }

    [Fact]
    public void A_refused_request_that_fits_the_bucket_succeeds_exactly_after_its_wait()
    {
        Gen.Select(GenSpec, GenSteps).Sample((spec, steps) =>
        {
            var clock = new FakeTimeProvider();
            var bucket = new TokenBucket(spec, clock.GetTimestamp(), clock.TimestampFrequency);
            foreach (var (advanceUs, permille) in steps)
            {
                clock.Advance(TimeSpan.FromMicroseconds(advanceUs));
                long tokens = (long)((Int128)spec.Size * Math.Min(permille, 1000) / 1000);
                if (bucket.Reduce(tokens, clock.GetTimestamp(), out long wait) != BucketReduction.Failure) continue;
                var before = (bucket.Budget, bucket.OneTimeBurst);
                clock.Advance(TimeSpan.FromTicks(wait * TimeSpan.TicksPerSecond / clock.TimestampFrequency));
                if (bucket.Reduce(tokens, clock.GetTimestamp(), out _) != BucketReduction.Success) return false;
                if (before.OneTimeBurst != 0 && before.OneTimeBurst >= tokens) return false; // a burst that covered it never fails
            }
            return true;
        });
    }

    [Fact]
    public void Limiter_over_time_serves_at_the_configured_rate_and_drops_nothing()
    {
        // A device that retries on every wake: the limiter lets through every request, at no more than the rate.
        Gen.Select(Gen.Long[1024, 1L << 30], Gen.Long[1, 1000], Gen.Int[1, 4096].Array[20, 200]).Sample((size, refillMs, requests) =>
        {
            var clock = new FakeTimeProvider();
            using var limiter = new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(size, 0, refillMs), null), clock);
            long total = 0;
            var start = clock.GetUtcNow();
            foreach (int kib in requests)
            {
                long bytes = Math.Min(kib * 1024L, size);
                int guard = 0;
                while (!limiter.TryConsume(bytes))
                {
                    clock.Advance(TimeSpan.FromMilliseconds(1));
                    if (++guard > 2_000_000) return false;
                }
                total += bytes;
            }
            double seconds = (clock.GetUtcNow() - start).TotalSeconds;
            double allowed = size + size * (seconds * 1000 / refillMs);
            return total <= allowed + 1;
        }, iter: 30);
    }
}
