using System.Threading.Channels;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// Fans VM events out to watchers. Each watcher has a bounded queue; a watcher that falls behind loses its
/// oldest events and is told how many with a DROPPED event, instead of slowing the daemon down.
/// </summary>
public sealed class EventHub
{
    public const int WatcherBacklog = 1024;

    private readonly Lock _gate = new();
    private readonly List<Watcher> _watchers = [];

    /// <summary>Watchers currently subscribed.</summary>
    public int WatcherCount { get { lock (_gate) return _watchers.Count; } }

    public void Publish(VmLifecycleEvent ev)
    {
        lock (_gate)
            foreach (var w in _watchers)
                if (w.Id is null || w.Id == ev.Id) w.Offer(ev);
    }

    /// <summary>Starts watching one VM (id) or all (null). Dispose the watcher to stop.</summary>
    public Watcher Subscribe(string? id)
    {
        var w = new Watcher(this, id);
        lock (_gate) _watchers.Add(w);
        return w;
    }

    /// <summary>Ends every watcher's stream (the daemon is stopping).</summary>
    public void CompleteAll()
    {
        lock (_gate)
        {
            foreach (var w in _watchers) w.Complete();
            _watchers.Clear();
        }
    }

    public sealed class Watcher : IDisposable
    {
        private readonly EventHub _hub;
        private readonly Channel<VmLifecycleEvent> _channel = Channel.CreateBounded<VmLifecycleEvent>(
            new BoundedChannelOptions(WatcherBacklog) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        private long _dropped;

        internal Watcher(EventHub hub, string? id)
        {
            _hub = hub;
            Id = id;
        }

        public string? Id { get; }

        internal void Offer(VmLifecycleEvent ev)
        {
            if (!_channel.Writer.TryWrite(ev)) Interlocked.Increment(ref _dropped);
        }

        internal void Complete() => _channel.Writer.TryComplete();

        /// <summary>Events in order; a DROPPED event comes first when some were lost.</summary>
        public async IAsyncEnumerable<VmLifecycleEvent> ReadAllAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        {
            await foreach (var ev in _channel.Reader.ReadAllAsync(ct).ConfigureAwait(false))
            {
                long dropped = Interlocked.Exchange(ref _dropped, 0);
                if (dropped > 0)
                    yield return new VmLifecycleEvent { Kind = VmEventKind.Dropped, Dropped = dropped, Time = ev.Time, Message = $"{dropped} events were dropped: this watcher was too slow" };
                yield return ev;
            }
        }

        public void Dispose()
        {
            lock (_hub._gate) _hub._watchers.Remove(this);
            _channel.Writer.TryComplete();
        }
    }
}
