namespace FireSharp.Daemon.Vms;

/// <summary>
/// Fans VM events out to watchers. Each watcher has a bounded queue (<see cref="WatcherBacklog"/>); a watcher
/// that falls behind loses its oldest events and is told how many with a DROPPED event, instead of slowing
/// the daemon down. A VM's final events (EXITED, DELETED) are never dropped: the oldest other event goes
/// instead, so they can make a queue longer than the backlog only by the few that a VM's runs end with.
/// </summary>
public sealed class EventHub
{
    public const int WatcherBacklog = 1024;

    private readonly Lock _gate = new();
    private readonly List<Watcher> _watchers = [];

    /// <summary>Watchers currently subscribed.</summary>
    public int WatcherCount { get { lock (_gate) return _watchers.Count; } }

    /// <summary>Sees every event as it is published, before the watchers (metrics); must be quick and must not throw.</summary>
    public Action<VmLifecycleEvent>? Observer { get; set; }

    public void Publish(VmLifecycleEvent ev)
    {
        Observer?.Invoke(ev);
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
        private readonly Lock _lock = new();
        private readonly LinkedList<VmLifecycleEvent> _queue = new();
        private TaskCompletionSource? _reader; // set while the reader waits for an event
        private bool _completed;
        private long _dropped;

        internal Watcher(EventHub hub, string? id)
        {
            _hub = hub;
            Id = id;
        }

        public string? Id { get; }

        /// <summary>A VM's last word: what a watcher must see even when it drops others.</summary>
        private static bool IsFinal(VmLifecycleEvent ev) => ev.Kind is VmEventKind.Exited or VmEventKind.Deleted;

        internal void Offer(VmLifecycleEvent ev)
        {
            TaskCompletionSource? reader;
            lock (_lock)
            {
                if (_completed) return;
                // Full: the oldest event that is not final goes; with only final ones queued, a new non-final one does.
                if (_queue.Count >= WatcherBacklog && !DropOldest() && !IsFinal(ev))
                {
                    _dropped++;
                    return;
                }
                _queue.AddLast(ev);
                reader = _reader;
                _reader = null;
            }
            reader?.TrySetResult();
        }

        /// <summary>Under the lock: drops the oldest event that is not final; false when all are final (none is dropped).</summary>
        private bool DropOldest()
        {
            for (var node = _queue.First; node is not null; node = node.Next)
            {
                if (IsFinal(node.Value)) continue;
                _queue.Remove(node);
                _dropped++;
                return true;
            }
            return false;
        }

        internal void Complete()
        {
            TaskCompletionSource? reader;
            lock (_lock)
            {
                _completed = true;
                reader = _reader;
                _reader = null;
            }
            reader?.TrySetResult();
        }

        /// <summary>Events in order; a DROPPED event comes first when some were lost. Ends once the watcher is completed and drained.</summary>
        public async IAsyncEnumerable<VmLifecycleEvent> ReadAllAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        {
            while (true)
            {
                VmLifecycleEvent? ev = null;
                long dropped = 0;
                Task? next = null;
                lock (_lock)
                {
                    if (_queue.First is { } first)
                    {
                        ev = first.Value;
                        _queue.RemoveFirst();
                        dropped = _dropped;
                        _dropped = 0;
                    }
                    else if (!_completed)
                    {
                        _reader ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        next = _reader.Task;
                    }
                }
                if (ev is null)
                {
                    if (next is null) yield break;
                    await next.WaitAsync(ct).ConfigureAwait(false);
                    continue;
                }
                if (dropped > 0)
                    yield return new VmLifecycleEvent { Kind = VmEventKind.Dropped, Dropped = dropped, Time = ev.Time, Message = $"{dropped} events were dropped: this watcher was too slow" };
                yield return ev;
            }
        }

        public void Dispose()
        {
            lock (_hub._gate) _hub._watchers.Remove(this);
            Complete();
        }
    }
}
