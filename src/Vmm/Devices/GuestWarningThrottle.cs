using System.Diagnostics;

namespace FireSharp.Devices;

/// <summary>
/// Rate-limits a warning the guest can cause at will (a connection refused at the limit, say), so a hostile guest
/// cannot fill the host's log: the first occurrence is logged, then at most one per <see cref="Interval"/>, each
/// saying how many were not logged since the last. Thread-safe; the clock is injectable for tests.
/// </summary>
public sealed class GuestWarningThrottle(TimeSpan interval, Func<long>? clock = null)
{
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(10);

    private readonly Func<long> _clock = clock ?? Stopwatch.GetTimestamp;
    private readonly long _intervalTicks = (long)(interval.TotalSeconds * Stopwatch.Frequency);
    private readonly Lock _lock = new();
    private long _lastLogged;
    private bool _any;
    private long _suppressed;

    public GuestWarningThrottle() : this(DefaultInterval) { }

    public TimeSpan Interval { get; } = interval;

    /// <summary>Every occurrence, logged or not.</summary>
    public long Occurrences { get; private set; }

    /// <summary>
    /// Counts one occurrence; true when it is to be logged, with <paramref name="suppressed"/> the occurrences not
    /// logged since the last one that was.
    /// </summary>
    public bool ShouldLog(out long suppressed)
    {
        lock (_lock)
        {
            Occurrences++;
            long now = _clock();
            if (_any && now - _lastLogged < _intervalTicks)
            {
                _suppressed++;
                suppressed = 0;
                return false;
            }
            _any = true;
            _lastLogged = now;
            suppressed = _suppressed;
            _suppressed = 0;
            return true;
        }
    }
}
