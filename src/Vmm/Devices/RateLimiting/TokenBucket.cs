namespace FireSharp.Devices.RateLimiting;

/// <summary>What <see cref="TokenBucket.Reduce"/> did.</summary>
public enum BucketReduction
{
    /// <summary>The tokens were taken.</summary>
    Success,

    /// <summary>Too few tokens: nothing was taken; the wait says when there will be enough.</summary>
    Failure,

    /// <summary>
    /// The request is larger than the bucket itself: it was let through and emptied the bucket (Firecracker's
    /// rule), and the wait is how long the overdraft takes to refill; the limiter blocks for that long.
    /// </summary>
    OverConsumption,
}

/// <summary>
/// One token bucket over timestamps of a <see cref="TimeProvider"/> (the caller passes "now", so a fake clock
/// drives it in tests). Not thread-safe: <see cref="RateLimiter"/> locks around it.
/// <para>
/// Semantics (Firecracker's rate_limiter): the budget starts at <see cref="TokenBucketSpec.Size"/> and refills
/// continuously at size per refill time, never above size; the one-time burst is spent before the budget and
/// never refilled. A request that finds too few tokens takes none (Firecracker keeps the one-time burst part
/// taken by a failed request spent; here a failure takes nothing). A request larger than the bucket can never
/// fit, so it goes through at once, empties the budget, and reports the time its excess needs to refill
/// (<see cref="BucketReduction.OverConsumption"/>).
/// </para>
/// </summary>
public sealed class TokenBucket
{
    private readonly long _size;
    private readonly long _refillTicks;
    private long _budget, _burst, _last;

    /// <param name="now">The current timestamp of the clock the caller will keep passing.</param>
    /// <param name="frequency">That clock's ticks per second (<see cref="TimeProvider.TimestampFrequency"/>).</param>
    public TokenBucket(TokenBucketSpec spec, long now, long frequency)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate("bucket");
        Spec = spec;
        _size = spec.Size;
        _refillTicks = (long)Int128.Max(1, (Int128)spec.RefillTimeMs * frequency / 1000);
        _budget = spec.Size;
        _burst = spec.OneTimeBurst;
        _last = now;
    }

    public TokenBucketSpec Spec { get; }

    /// <summary>Tokens in the bucket as of the last <see cref="Refill"/>, and one-time burst left.</summary>
    public long Budget => _budget;
    public long OneTimeBurst => _burst;

    /// <summary>The mutable part, to undo a reduction (<see cref="RateLimiter"/> takes ops and bytes together or neither).</summary>
    internal (long Budget, long Burst, long Last) Mark => (_budget, _burst, _last);

    internal void Reset((long Budget, long Burst, long Last) mark) => (_budget, _burst, _last) = mark;

    /// <summary>Sets the budget and burst left (a restored snapshot), clamped to the bucket; refilling starts at <paramref name="now"/>.</summary>
    public void Restore(long budget, long oneTimeBurst, long now)
    {
        _budget = Math.Clamp(budget, 0, _size);
        _burst = Math.Clamp(oneTimeBurst, 0, Spec.OneTimeBurst);
        _last = now;
    }

    /// <summary>Adds what the time since the last refill earned. Whole tokens only; the remainder of time is kept for later.</summary>
    public void Refill(long now)
    {
        long elapsed = now - _last;
        if (elapsed <= 0) return;
        Int128 earned = (Int128)elapsed * _size / _refillTicks;
        if (earned >= _size - _budget)
        {
            _budget = _size;
            _last = now;
        }
        else if (earned > 0)
        {
            // Advance by the time those whole tokens took, rounded up (never past now): no fraction is counted twice.
            _budget += (long)earned;
            _last += (long)((earned * _refillTicks + _size - 1) / _size);
        }
    }

    /// <summary>
    /// Takes <paramref name="tokens"/> (see the class remarks). <paramref name="waitTicks"/> is 0 on success; on
    /// failure the time until enough tokens are back; on over-consumption the time the excess takes to refill.
    /// </summary>
    public BucketReduction Reduce(long tokens, long now, out long waitTicks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        waitTicks = 0;
        Refill(now);
        if (tokens <= _burst)
        {
            _burst -= tokens;
            return BucketReduction.Success;
        }
        long needed = tokens - _burst;
        if (needed <= _budget)
        {
            _burst = 0;
            _budget -= needed;
            return BucketReduction.Success;
        }
        if (needed > _size)
        {
            _burst = 0;
            waitTicks = TicksFor(needed - _budget);
            _budget = 0;
            _last = now;
            return BucketReduction.OverConsumption;
        }
        waitTicks = TicksFor(needed - _budget) - (now - _last);
        waitTicks = Math.Max(1, waitTicks);
        return BucketReduction.Failure;
    }

    /// <summary>The time <paramref name="tokens"/> take to refill, rounded up.</summary>
    private long TicksFor(long tokens) => (long)(((Int128)tokens * _refillTicks + _size - 1) / _size);
}
