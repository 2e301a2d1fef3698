using System.Runtime.InteropServices;
using FireSharp.Devices.Virtio.Vsock;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>Where <see cref="VirtioEventLoop.AttachToVm"/> put a device, and how it is notified and interrupts.</summary>
public readonly record struct VirtioMmioPlacement(VirtioMmioTransport Transport, ulong Address, uint Gsi, string NotifyKind, string InterruptKind);

/// <summary>
/// The thread of a virtio device that watches descriptors of its own besides its queues (virtio-net's tap,
/// virtio-vsock's sockets), where <see cref="VirtioWorker"/> only polls the queues; and that device's
/// attachment to its transport and VM. It owns an epoll instance over one eventfd per queue (tag = queue
/// index, for KVM_IOEVENTFD with datamatch = index), a wake eventfd (tag = <see cref="WakeTag"/>) and whatever
/// the device adds with <see cref="Control"/>, the irqfd eventfd of <see cref="AttachToVm"/>, and the thread,
/// which calls the device's turn (<c>RunOnce(-1)</c>) until <see cref="Stop"/>. <see cref="TryWait"/> drains
/// the queue and wake eventfds itself; the device decides what every event means. Tests may call the turn
/// directly instead of starting the thread (never both).
/// </summary>
internal sealed class VirtioEventLoop : IDisposable
{
    private readonly int _epfd = -1;
    private readonly EventFd[] _queueEvents;
    private readonly EventFd _wake;
    private readonly Epoll.EpollEvent[] _events;
    private readonly Thread _thread;
    private readonly string _kind;
    private EventFd? _irqEvent;
    private VirtioMmioTransport? _transport;
    private int _stopRequested, _started, _disposed;

    /// <param name="kind">The device kind in messages and the thread's name ("net": "virtio-net", "the net device ...").</param>
    /// <param name="queueCount">The device's queues: one eventfd each.</param>
    /// <param name="maxEvents">Events taken from one epoll_wait.</param>
    /// <param name="turn">One turn of the device's loop, given the timeout (-1 = forever); run on the thread.</param>
    /// <param name="failed">Called on the thread when a turn throws; the loop has then stopped.</param>
    public VirtioEventLoop(string kind, int queueCount, int maxEvents, Action<int> turn, Action<Exception> failed)
    {
        ArgumentNullException.ThrowIfNull(turn);
        ArgumentNullException.ThrowIfNull(failed);
        _kind = kind;
        _queueEvents = new EventFd[queueCount];
        _events = new Epoll.EpollEvent[maxEvents];
        _epfd = Epoll.Create(Epoll.EPOLL_CLOEXEC);
        if (_epfd < 0) throw new IOException("epoll_create1: " + Errno.Text(Marshal.GetLastPInvokeError()));
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
            }
        }) { IsBackground = true, Name = "virtio-" + kind };
    }

    /// <summary>The transport in front of the device (after <see cref="Attach"/>), through which its queues run.</summary>
    public VirtioMmioTransport? Transport => _transport;

    /// <summary>The virtio-mmio slot the device occupies (after <see cref="AttachToVm"/>); -1 before.</summary>
    public int Slot { get; private set; } = -1;

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
            throw new IOException("epoll_ctl: " + Errno.Text(Marshal.GetLastPInvokeError()));
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
            int err = Marshal.GetLastPInvokeError();
            ready = default;
            if (err == Epoll.EINTR) return false;
            throw new IOException("epoll_wait: " + Errno.Text(err));
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

    /// <summary>
    /// Puts <paramref name="device"/> into virtio-mmio slot <paramref name="slot"/> of a VM: an irqfd (or, if that
    /// fails or is unavailable, KVM_IRQ_LINE), a transport that notifies this loop, quiesced if asked, the queue
    /// eventfds as ioeventfds (or MMIO-exit notification), <see cref="Attach"/>, MMIO registration as
    /// <paramref name="mmioName"/>, then <see cref="Start"/>. A fallback is reported to <paramref name="fallBack"/>
    /// (mechanism, error). The irqfd's eventfd is closed with the loop.
    /// </summary>
    public VirtioMmioPlacement AttachToVm(VirtioHost host, int slot, IVirtioDevice device, bool quiesced, string mmioName,
        Action<string, string> fallBack)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(fallBack);
        if (_transport is not null) throw new InvalidOperationException($"the {_kind} device is already attached");
        ulong address = VirtioMmioLayout.Address(slot);
        uint gsi = VirtioMmioLayout.Gsi(slot);

        IInterruptLine? line = null;
        string interruptKind = "KVM_IRQ_LINE";
        if (host.AssignIrqfd is { } assignIrqfd)
        {
            var irq = EventFd.Create();
            try
            {
                assignIrqfd(irq.Fd, gsi);
                _irqEvent = irq;
                line = new EventFdInterruptLine(irq);
                interruptKind = "irqfd";
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                irq.Dispose();
                fallBack("irqfd", e.Message);
            }
        }
        line ??= host.InterruptLine(gsi);

        var transport = new VirtioMmioTransport(device, host.Memory, line, host.Logger) { QueueNotifyHandler = Notify };
        if (quiesced) transport.Quiesce();
        string notifyKind = "MMIO exit";
        if (host.AssignIoeventfd is { } assignIoeventfd)
        {
            try
            {
                for (int q = 0; q < _queueEvents.Length; q++)
                    assignIoeventfd(_queueEvents[q].Fd, address + VirtioMmioRegister.QueueNotify, (uint)q);
                notifyKind = "ioeventfd";
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                fallBack("ioeventfd", e.Message);
            }
        }
        Attach(device, transport);
        Slot = slot;
        host.RegisterMmio(address, VirtioMmioTransport.WindowSize, transport, mmioName);
        Start();
        return new VirtioMmioPlacement(transport, address, gsi, notifyKind, interruptKind);
    }

    /// <summary>Stops the loop (see <see cref="Stop"/>) and closes the epoll instance and every eventfd.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_thread is not null) Stop();
        if (_epfd > 0) Epoll.Close(_epfd);
        foreach (var e in _queueEvents) e?.Dispose();
        _wake?.Dispose();
        _irqEvent?.Dispose();
    }
}
