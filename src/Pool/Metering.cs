namespace FireSharp.Pool;

/// <summary>
/// Usage as numbers: billed time is the duration rounded up to a whole millisecond, and GB-seconds are billed
/// seconds × memory in GiB, exact in decimal. How those numbers are shown (a REPORT line, a bill) is not the pool's.
/// </summary>
internal static class Metering
{
    /// <summary>Rounded up to the next whole millisecond.</summary>
    public static TimeSpan BilledDuration(TimeSpan duration)
    {
        if (duration <= TimeSpan.Zero) return TimeSpan.Zero;
        long ms = (duration.Ticks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
        return TimeSpan.FromMilliseconds(ms);
    }

    /// <summary>Billed seconds × memory in GiB, exact in decimal.</summary>
    public static decimal GbSeconds(TimeSpan billed, int memoryMib) =>
        (decimal)(billed.Ticks / TimeSpan.TicksPerMillisecond) / 1000m * memoryMib / 1024m;
}

/// <summary>The account's totals, mutated under the pool lock.</summary>
internal sealed class Totals(IInvocationObserver? observer = null)
{
    public long Invocations, Errors, Throttles;
    public decimal GbSeconds;

    /// <summary>Counts one invocation that ran (or failed to initialize) for <paramref name="fn"/> and the account.</summary>
    public void Count(FunctionEntry fn, InvokeResult r)
    {
        var s = fn.Stats;
        s.Invocations++;
        Invocations++;
        if (r.FunctionError is not null) { s.Errors++; Errors++; }
        s.CountStart(r.StartKind);
        s.GbSeconds += r.GbSeconds;
        GbSeconds += r.GbSeconds;
        s.AddDuration(r.Duration);
        observer?.Invoked(fn.Name, r);
    }

    public void CountThrottle(FunctionEntry fn, ThrottleReason reason)
    {
        fn.Stats.Throttles++;
        Throttles++;
        observer?.Throttled(fn.Name, reason);
    }
}

/// <summary>Per-function counters, mutated under the pool lock.</summary>
internal sealed class StatsAccumulator
{
    private readonly double[] _durationsMs = new double[1024];
    private int _durationCount, _durationNext;
    public long Invocations, Errors, Throttles, Timeouts, InitErrors, Warm, SnapshotCold, BootCold;
    public long AsyncAccepted, AsyncSucceeded, AsyncFailed, AsyncRetries;
    public decimal GbSeconds;

    public void AddDuration(TimeSpan d)
    {
        _durationsMs[_durationNext] = d.TotalMilliseconds;
        _durationNext = (_durationNext + 1) % _durationsMs.Length;
        if (_durationCount < _durationsMs.Length) _durationCount++;
    }

    public void CountStart(StartKind kind)
    {
        switch (kind)
        {
            case StartKind.Warm: Warm++; break;
            case StartKind.SnapshotCold: SnapshotCold++; break;
            default: BootCold++; break;
        }
    }

    public FunctionStats Snapshot(int inFlight, int idle, int busy, int creating, int provisionedReady, int draining)
    {
        TimeSpan? p50 = null, p99 = null;
        if (_durationCount > 0)
        {
            var sorted = _durationsMs.AsSpan(0, _durationCount).ToArray();
            Array.Sort(sorted);
            p50 = TimeSpan.FromMilliseconds(Percentile(sorted, 0.50));
            p99 = TimeSpan.FromMilliseconds(Percentile(sorted, 0.99));
        }
        return new FunctionStats
        {
            Invocations = Invocations, Errors = Errors, Throttles = Throttles, Timeouts = Timeouts,
            InitErrors = InitErrors, WarmStarts = Warm, SnapshotColdStarts = SnapshotCold, BootColdStarts = BootCold,
            GbSeconds = GbSeconds, DurationP50 = p50, DurationP99 = p99,
            AsyncAccepted = AsyncAccepted, AsyncSucceeded = AsyncSucceeded, AsyncFailed = AsyncFailed, AsyncRetries = AsyncRetries,
            InFlight = inFlight, IdleVms = idle, BusyVms = busy, CreatingVms = creating,
            ProvisionedReady = provisionedReady, DrainingVms = draining,
        };
    }

    // Nearest-rank percentile.
    private static double Percentile(double[] sorted, double p) =>
        sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
