namespace FireSharp.Devices.RateLimiting;

/// <summary>
/// The system clock with timers of its own: every timer fires on one dedicated thread, never the thread pool. A
/// limiter's wake-up only signals an eventfd, so one thread serves every limiter of the process; and a busy or
/// starved thread pool (a test host, a daemon under load) cannot hold a throttled device past its bucket's
/// credit, which would lose the tokens that accrued meanwhile and slow the device below its rate.
/// </summary>
public sealed class LimiterClock : TimeProvider
{
    public static readonly LimiterClock Instance = new();

    private readonly object _gate = new();
    private readonly List<Entry> _armed = [];
    private Thread? _thread;

    private LimiterClock() { }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        if (period != Timeout.InfiniteTimeSpan) throw new NotSupportedException("the limiter clock has one-shot timers only");
        var entry = new Entry(this, callback, state);
        entry.Change(dueTime, period);
        return entry;
    }

    private void Arm(Entry entry, long due)
    {
        lock (_gate)
        {
            entry.Due = due;
            if (!_armed.Contains(entry)) _armed.Add(entry);
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "rate-limiter-timers" };
                _thread.Start();
            }
            Monitor.PulseAll(_gate);
        }
    }

    private void Disarm(Entry entry)
    {
        lock (_gate) _armed.Remove(entry);
    }

    private void Run()
    {
        var due = new List<Entry>();
        while (true)
        {
            lock (_gate)
            {
                while (true)
                {
                    long now = GetTimestamp(), next = long.MaxValue;
                    for (int i = _armed.Count - 1; i >= 0; i--)
                    {
                        if (_armed[i].Due <= now)
                        {
                            due.Add(_armed[i]);
                            _armed.RemoveAt(i);
                        }
                        else next = Math.Min(next, _armed[i].Due);
                    }
                    if (due.Count > 0) break;
                    if (next == long.MaxValue) Monitor.Wait(_gate);
                    else Monitor.Wait(_gate, TimeSpan.FromTicks(Math.Max(1, (next - now) * TimeSpan.TicksPerSecond / TimestampFrequency)));
                }
            }
            foreach (var e in due) e.Fire();
            due.Clear();
        }
    }

    private sealed class Entry(LimiterClock clock, TimerCallback callback, object? state) : ITimer
    {
        public long Due;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            if (dueTime == Timeout.InfiniteTimeSpan)
            {
                clock.Disarm(this);
                return true;
            }
            long ticks = (long)(dueTime.Ticks * (double)clock.TimestampFrequency / TimeSpan.TicksPerSecond);
            clock.Arm(this, clock.GetTimestamp() + Math.Max(0, ticks));
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose() => clock.Disarm(this);

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
