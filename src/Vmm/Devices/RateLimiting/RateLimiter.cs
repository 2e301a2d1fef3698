namespace FireSharp.Devices.RateLimiting;

/// <summary>
/// A device's rate limiter (Firecracker's model): an optional bandwidth bucket and an optional operations
/// bucket (<see cref="RateLimiterSpec"/>). Each request costs one operation and its bytes, taken together or not
/// at all. A refused request is the device's to keep (it stays in its queue, or the tap is left unread); the
/// limiter arms a timer for when the tokens are back and then calls <see cref="Wake"/>, on a timer thread, so
/// the device runs its queue again. Nothing is dropped. While the timer is armed (also after a request larger
/// than a bucket went through, for the time its excess takes to refill) every request is refused.
/// <para>
/// Unlike Firecracker, whose timer always waits 100 ms, the timer waits exactly until the refused request fits
/// (at least 1 ms): throughput stays at the configured rate with small buckets. The timers run on
/// <see cref="LimiterClock"/>'s own thread, not the thread pool.
/// </para>
/// <para>
/// Thread-safe: the device thread consumes, the VM's owner may <see cref="Update"/> at any time (fresh, full
/// buckets, as Firecracker's PATCH; a blocked device is woken), snapshots <see cref="Save"/> and
/// <see cref="Restore"/>. An unlimited limiter costs one volatile read per request.
/// </para>
/// </summary>
public sealed class RateLimiter : IDisposable
{
    private readonly object _gate = new();
    private readonly TimeProvider _time;
    private TokenBucket? _bandwidth, _ops;
    private ITimer? _timer;
    private long _blockedUntil;
    private bool _blocked;
    private volatile bool _unlimited;
    private long _deferred;
    private long _throttledTicks;

    public RateLimiter(RateLimiterSpec? spec = null, TimeProvider? time = null)
    {
        _time = time ?? LimiterClock.Instance;
        Set(spec);
    }

    /// <summary>Called (on a timer thread, or the updating thread) when refused requests may go again.</summary>
    public Action? Wake { get; set; }

    /// <summary>The current buckets' configuration (null = unlimited).</summary>
    public RateLimiterSpec? Spec
    {
        get
        {
            lock (_gate) return _bandwidth is null && _ops is null ? null : new RateLimiterSpec(_bandwidth?.Spec, _ops?.Spec);
        }
    }

    /// <summary>No bucket: every request goes through (a device may skip working out a request's cost).</summary>
    public bool IsUnlimited => _unlimited;

    /// <summary>Requests refused so far.</summary>
    public long Deferred => Interlocked.Read(ref _deferred);

    /// <summary>How long the device has been held so far: the sum of the waits this limiter armed (its clock's ticks).</summary>
    public TimeSpan ThrottledTime
    {
        get { lock (_gate) return TimeSpan.FromSeconds((double)_throttledTicks / _time.TimestampFrequency); }
    }

    /// <summary>Whether a refused request waits for the timer.</summary>
    public bool IsBlocked
    {
        get { lock (_gate) return _blocked; }
    }

    /// <summary>
    /// Takes one operation and <paramref name="bytes"/>; false (nothing taken, the timer armed) when the device must
    /// keep the request and wait for <see cref="Wake"/>.
    /// </summary>
    public bool TryConsume(long bytes)
    {
        if (_unlimited) return true;
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            if (_blocked)
            {
                // A late timer must not hold a device that runs anyway: past the wake-up time, go on.
                if (now < _blockedUntil)
                {
                    Interlocked.Increment(ref _deferred);
                    return false;
                }
                _blocked = false;
            }
            var opsMark = _ops?.Mark;
            long wait = 0, overdraft = 0;
            bool ok = Take(_ops, 1, now, ref wait, ref overdraft) && Take(_bandwidth, bytes, now, ref wait, ref overdraft);
            if (!ok)
            {
                if (opsMark is { } m) _ops!.Reset(m);
                Interlocked.Increment(ref _deferred);
                BlockLocked(now, wait);
                return false;
            }
            if (overdraft > 0) BlockLocked(now, overdraft);
            return true;
        }
    }

    private static bool Take(TokenBucket? bucket, long tokens, long now, ref long wait, ref long overdraft)
    {
        if (bucket is null) return true;
        switch (bucket.Reduce(tokens, now, out long ticks))
        {
            case BucketReduction.Failure:
                wait = ticks;
                return false;
            case BucketReduction.OverConsumption:
                overdraft = Math.Max(overdraft, ticks);
                return true;
            default:
                return true;
        }
    }

    private void BlockLocked(long now, long ticks)
    {
        _blocked = true;
        _blockedUntil = now + ticks;
        _throttledTicks += ticks;
        _timer ??= _time.CreateTimer(static s => ((RateLimiter)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _timer.Change(Delay(ticks), Timeout.InfiniteTimeSpan);
    }

    private TimeSpan Delay(long ticks)
    {
        // Round up to whole milliseconds (timers have ms resolution): never wake before the tokens are there.
        long ms = (long)(((Int128)ticks * 1000 + _time.TimestampFrequency - 1) / _time.TimestampFrequency);
        return TimeSpan.FromMilliseconds(Math.Max(1, ms));
    }

    private void OnTimer()
    {
        lock (_gate)
        {
            if (!_blocked) return;
            long now = _time.GetTimestamp();
            if (now < _blockedUntil)
            {
                _timer?.Change(Delay(_blockedUntil - now), Timeout.InfiniteTimeSpan);
                return;
            }
            _blocked = false;
        }
        Wake?.Invoke();
    }

    /// <summary>Replaces the buckets with fresh, full ones of <paramref name="spec"/> (null = no limit) and wakes a blocked device.</summary>
    public void Update(RateLimiterSpec? spec)
    {
        spec?.Validate("rate_limiter");
        bool wasBlocked;
        lock (_gate)
        {
            wasBlocked = _blocked;
            Set(spec);
        }
        if (wasBlocked) Wake?.Invoke();
    }

    private void Set(RateLimiterSpec? spec)
    {
        spec?.Validate("rate_limiter");
        long now = _time.GetTimestamp();
        _bandwidth = spec?.Bandwidth is { } b ? new TokenBucket(b, now, _time.TimestampFrequency) : null;
        _ops = spec?.Ops is { } o ? new TokenBucket(o, now, _time.TimestampFrequency) : null;
        _blocked = false;
        _timer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _unlimited = _bandwidth is null && _ops is null;
    }

    /// <summary>What a snapshot keeps: the buckets and what is left in them (not the timer: a restored device starts unblocked).</summary>
    public RateLimiterState Save()
    {
        lock (_gate)
        {
            long now = _time.GetTimestamp();
            _bandwidth?.Refill(now);
            _ops?.Refill(now);
            return new RateLimiterState(Saved(_bandwidth), Saved(_ops));
        }
    }

    private static BucketState? Saved(TokenBucket? b) => b is null ? null : new BucketState(b.Spec, b.Budget, b.OneTimeBurst);

    /// <summary>Takes a snapshot's limiter: its buckets with what was left in them, refilling from now.</summary>
    public void Restore(RateLimiterState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        bool wasBlocked;
        lock (_gate)
        {
            wasBlocked = _blocked;
            Set(new RateLimiterSpec(state.Bandwidth?.Spec, state.Ops?.Spec));
            long now = _time.GetTimestamp();
            if (state.Bandwidth is { } b) _bandwidth!.Restore(b.Budget, b.OneTimeBurst, now);
            if (state.Ops is { } o) _ops!.Restore(o.Budget, o.OneTimeBurst, now);
        }
        if (wasBlocked) Wake?.Invoke();
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _timer?.Dispose();
            _timer = null;
            _blocked = false;
        }
    }
}

/// <summary>One bucket in a snapshot: its configuration, tokens left and one-time burst left.</summary>
public sealed record BucketState(TokenBucketSpec Spec, long Budget, long OneTimeBurst);

/// <summary>A limiter in a snapshot (<see cref="RateLimiter.Save"/>); written into the device's state by <see cref="RateLimiterStateCodec"/>.</summary>
public sealed record RateLimiterState(BucketState? Bandwidth, BucketState? Ops)
{
    public static readonly RateLimiterState Unlimited = new(null, null);
}

/// <summary>The binary form of a <see cref="RateLimiterState"/> inside a device's snapshot state.</summary>
public static class RateLimiterStateCodec
{
    public static void Write(BinaryWriter writer, RateLimiterState state)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(state);
        WriteBucket(writer, state.Bandwidth);
        WriteBucket(writer, state.Ops);
    }

    /// <summary>Reads one; <see cref="InvalidDataException"/> for a bucket that does not validate.</summary>
    public static RateLimiterState Read(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        return new RateLimiterState(ReadBucket(reader), ReadBucket(reader));
    }

    private static void WriteBucket(BinaryWriter w, BucketState? b)
    {
        w.Write(b is not null);
        if (b is null) return;
        w.Write(b.Spec.Size);
        w.Write(b.Spec.OneTimeBurst);
        w.Write(b.Spec.RefillTimeMs);
        w.Write(b.Budget);
        w.Write(b.OneTimeBurst);
    }

    private static BucketState? ReadBucket(BinaryReader r)
    {
        if (!r.ReadBoolean()) return null;
        var spec = new TokenBucketSpec(r.ReadInt64(), r.ReadInt64(), r.ReadInt64());
        try
        {
            spec.Validate("rate_limiter");
        }
        catch (RateLimiterConfigException e)
        {
            throw new InvalidDataException("a rate limiter in the device state is invalid: " + e.Message, e);
        }
        return new BucketState(spec, r.ReadInt64(), r.ReadInt64());
    }
}
