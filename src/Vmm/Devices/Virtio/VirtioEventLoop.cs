using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// The one execution model of every virtio device: a thread per device that sleeps in epoll over one eventfd
/// per queue (tag = queue index, for KVM_IOEVENTFD with datamatch = index), a wake eventfd (tag =
/// <see cref="WakeTag"/>) and whatever the device adds with <see cref="Control"/> (virtio-net's tap, virtio-vsock's
/// sockets), and calls the device's turn (<c>RunOnce(-1)</c>) until <see cref="Stop"/>. A device that watches
/// nothing but its queues (virtio-blk, virtio-rng) gets <see cref="ForQueues"/>, whose turn runs the signalled
/// queues. <see cref="TryWait"/> drains the queue and wake eventfds itself; the device decides what every event
/// means. The device manager wires the eventfds into KVM and starts the thread; tests may call the turn directly
/// instead (never both).
/// </summary>
internal sealed class VirtioEventLoop : IDisposable
{
    private readonly EpollHandle _epfd;
    private readonly EventFd[] _queueEvents;
    private readonly EventFd _wake;
    private readonly Epoll.EpollEvent[] _events;
    private readonly Thread _thread;
    private readonly string _kind;
    private VirtioMmioTransport? _transport;
    private int _stopRequested, _started, _disposed;

    /// <param name="kind">The device kind in messages and the thread's name ("net": "virtio-net", "the net device ...").</param>
    /// <param name="queueCount">The device's queues: one eventfd each.</param>
    /// <param name="maxEvents">Events taken from one epoll_wait.</param>
    /// <param name="turn">One turn of the device's loop, given the timeout (-1 = forever); run on the thread.</param>
    /// <param name="failed">Called on the thread when a turn throws; the loop has then stopped, and the attached
    /// transport is put in DEVICE_NEEDS_RESET (unless the loop was stopping).</param>
    public VirtioEventLoop(string kind, int queueCount, int maxEvents, Action<int> turn, Action<Exception> failed)
    {
        ArgumentNullException.ThrowIfNull(turn);
        ArgumentNullException.ThrowIfNull(failed);
        _kind = kind;
        _queueEvents = new EventFd[queueCount];
        _events = new Epoll.EpollEvent[maxEvents];
        _epfd = Epoll.Create(Epoll.EPOLL_CLOEXEC);
        if (_epfd.IsInvalid) throw Errno.LastIOError("epoll_create1");
        try
        {
            for (int i = 0; i < _queueEvents.Length; i++)
            {
                _queueEvents[i] = EventFd.Create();
                Control(Epoll.EPOLL_CTL_ADD, _queueEvents[i].Fd, Epoll.EPOLLIN, (ulong)i);
            }
            _wake = EventFd.Create();
            Control(Epoll.EPOLL_CTL_ADD, _wake.Fd, Epoll.EPOLLIN, WakeTag);
        }
        catch
        {
            Dispose();
            throw;
        }
        _thread = new Thread(() =>
        {
            try
            {
                while (Volatile.Read(ref _stopRequested) == 0) turn(-1);
            }
            catch (Exception e)
            {
                failed(e);
                // The device is dead from here on: say so to the guest (DEVICE_NEEDS_RESET and a configuration
                // interrupt) rather than leave its driver waiting on queues nobody serves. The VM lives on.
                if (Volatile.Read(ref _stopRequested) == 0) _transport?.OnEventLoopFailed(e);
            }
        }) { IsBackground = true, Name = "virtio-" + kind };
    }

    /// <summary>
    /// A loop for a device that watches nothing but its queues: each turn runs the queues that were signalled
    /// (<see cref="VirtioMmioTransport.ProcessQueue"/>). <paramref name="failed"/> is called on the thread if a
    /// turn throws; the loop has then stopped.
    /// </summary>
    public static VirtioEventLoop ForQueues(string kind, int queueCount, Action<Exception> failed)
    {
        if (queueCount is < 1 or > 31) throw new ArgumentOutOfRangeException(nameof(queueCount), queueCount, "a queue-only loop runs 1..31 queues");
        VirtioEventLoop? loop = null;
        loop = new VirtioEventLoop(kind, queueCount, queueCount + 1, timeoutMs => loop!.RunSignalledQueues(timeoutMs), failed);
        return loop;
    }

    /// <summary>One turn of a <see cref="ForQueues"/> loop.</summary>
    public void RunSignalledQueues(int timeoutMs)
    {
        if (!TryWait(timeoutMs, out _, out uint signalled) || _transport is not { } transport) return;
        for (int q = 0; q < _queueEvents.Length; q++)
            if ((signalled & (1u << q)) != 0) transport.ProcessQueue(q);
    }

    /// <summary>The transport in front of the device (after <see cref="Attach"/>), through which its queues run.</summary>
    public VirtioMmioTransport? Transport => _transport;

    /// <summary>Takes <paramref name="transport"/>, which must front <paramref name="device"/>.</summary>
    public void Attach(IVirtioDevice device, VirtioMmioTransport transport)
    {
        ArgumentNullException.ThrowIfNull(transport);
        if (transport.Device != device) throw new ArgumentException("the transport belongs to another device", nameof(transport));
        _transport = transport;
    }

    /// <summary>Starts the thread (after <see cref="Attach"/>); once only.</summary>
    public void Start()
    {
        if (_transport is null) throw new InvalidOperationException($"attach a transport before starting the {_kind} device");
        if (Interlocked.CompareExchange(ref _started, 1, 0) != 0) throw new InvalidOperationException($"{_kind} device already started");
        _thread.Start();
    }

    /// <summary>The epoll tag of the wake eventfd: the queue count (queues have tags 0 .. count-1).</summary>
    public ulong WakeTag => (ulong)_queueEvents.Length;

    /// <summary>The eventfd for queue <paramref name="index"/> (for KVM_IOEVENTFD, datamatch = index).</summary>
    public EventFd QueueEvent(int index) => _queueEvents[index];

    /// <summary>Wakes the loop for one queue; suitable as <see cref="VirtioMmioTransport.QueueNotifyHandler"/>. A no-op once stopping.</summary>
    public void Notify(int queue)
    {
        if ((uint)queue >= (uint)_queueEvents.Length || Volatile.Read(ref _stopRequested) != 0) return;
        try { _queueEvents[queue].Signal(); }
        catch (ObjectDisposedException) { }
    }

    /// <summary>Wakes the loop (tag <see cref="WakeTag"/>); a no-op once stopping.</summary>
    public void Wake()
    {
        if (Volatile.Read(ref _stopRequested) != 0) return;
        try { _wake.Signal(); }
        catch (ObjectDisposedException) { }
    }

    /// <summary>epoll_ctl on the loop's instance; throws <see cref="IOException"/> on failure.</summary>
    public void Control(int op, int fd, uint events, ulong tag)
    {
        var ev = new Epoll.EpollEvent { Events = events, Data = tag };
        if (Epoll.Ctl(_epfd, op, fd, ref ev) < 0)
            throw Errno.LastIOError("epoll_ctl");
    }

    /// <summary>Stops watching <paramref name="fd"/>, ignoring failure (a descriptor about to be closed).</summary>
    public void Remove(int fd)
    {
        var none = default(Epoll.EpollEvent);
        Epoll.Ctl(_epfd, Epoll.EPOLL_CTL_DEL, fd, ref none);
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> (-1 = forever) for events. False when a signal interrupted the
    /// wait (nothing is ready); throws <see cref="IOException"/> on any other failure. The queue and wake
    /// eventfds that fired are drained; <paramref name="signalled"/> has bit i for queue i and bit
    /// <see cref="WakeTag"/> for the wake eventfd. <paramref name="ready"/> holds every event, the loop's own too.
    /// </summary>
    public bool TryWait(int timeoutMs, out ReadOnlySpan<Epoll.EpollEvent> ready, out uint signalled)
    {
        int n = Epoll.Wait(_epfd, _events, _events.Length, timeoutMs);
        signalled = 0;
        if (n < 0)
        {
            int err = Errno.Last;
            ready = default;
            if (err == Errno.EINTR) return false;
            throw Errno.IOError("epoll_wait", err);
        }
        ready = _events.AsSpan(0, n);
        foreach (var e in ready)
        {
            if (e.Data < (ulong)_queueEvents.Length) _queueEvents[e.Data].Drain();
            else if (e.Data == WakeTag) _wake.Drain();
            else continue;
            signalled |= 1u << (int)e.Data;
        }
        return true;
    }

    /// <summary>
    /// Ends the loop after its current turn and waits for the thread; descriptors stay open until
    /// <see cref="Dispose"/>. False (and nothing done) if it was already called.
    /// </summary>
    public bool Stop()
    {
        if (Interlocked.Exchange(ref _stopRequested, 1) != 0) return false;
        if (Volatile.Read(ref _started) != 0)
        {
            _wake.Signal();
            _thread.Join();
        }
        return true;
    }

    /// <summary>Stops the loop (see <see cref="Stop"/>) and closes the epoll instance and every eventfd.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_thread is not null) Stop();
        _epfd?.Dispose();
        foreach (var e in _queueEvents) e?.Dispose();
        _wake?.Dispose();
    }
}
