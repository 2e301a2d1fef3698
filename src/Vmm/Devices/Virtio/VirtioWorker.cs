using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// The thread that does a device's I/O, off the vCPU threads. It sleeps in poll(2) on one eventfd per queue
/// (plus one to stop it). A queue's eventfd is signalled by KVM when the guest writes QueueNotify (register it
/// with KVM_IOEVENTFD, datamatch = queue index) or, without ioeventfd, by the transport through
/// <see cref="Notify"/>. Each wake-up runs <see cref="VirtioMmioTransport.ProcessQueue"/>.
/// </summary>
public sealed class VirtioWorker : IDisposable
{
    private readonly VirtioMmioTransport _transport;
    private readonly ILogger _logger;
    private readonly EventFd[] _queueEvents;
    private readonly EventFd _stop;
    private readonly Thread _thread;
    private int _state; // 0 created, 1 started, 2 disposed

    public VirtioWorker(VirtioMmioTransport transport, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(transport);
        _transport = transport;
        _logger = logger ?? NullLogger.Instance;
        _queueEvents = new EventFd[transport.Queues.Count];
        try
        {
            for (int i = 0; i < _queueEvents.Length; i++) _queueEvents[i] = EventFd.Create();
            _stop = EventFd.Create();
        }
        catch
        {
            foreach (var e in _queueEvents) e?.Dispose();
            throw;
        }
        _thread = new Thread(Run) { IsBackground = true, Name = "virtio " + transport.Device.Id };
    }

    /// <summary>The eventfd that wakes the worker for queue <paramref name="index"/> (for KVM_IOEVENTFD).</summary>
    public EventFd QueueEvent(int index) => _queueEvents[index];

    /// <summary>Wakes the worker for one queue; suitable as <see cref="VirtioMmioTransport.QueueNotifyHandler"/>.</summary>
    public void Notify(int queue)
    {
        if ((uint)queue >= (uint)_queueEvents.Length || Volatile.Read(ref _state) == 2) return;
        try { _queueEvents[queue].Signal(); }
        catch (ObjectDisposedException) { } // a late notify while the VM is torn down
    }

    public void Start()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0) throw new InvalidOperationException("worker already started or disposed");
        _thread.Start();
    }

    private void Run()
    {
        try
        {
            var fds = new Libc.PollFd[_queueEvents.Length + 1];
            for (int i = 0; i < _queueEvents.Length; i++) fds[i] = new Libc.PollFd { Fd = _queueEvents[i].Fd, Events = Libc.POLLIN };
            fds[^1] = new Libc.PollFd { Fd = _stop.Fd, Events = Libc.POLLIN };
            while (true)
            {
                for (int i = 0; i < fds.Length; i++) fds[i].Revents = 0;
                if (Libc.Poll(fds, (ulong)fds.Length, -1) < 0)
                {
                    int err = Marshal.GetLastPInvokeError();
                    if (err == Libc.EINTR) continue; // the runtime's own signals
                    throw new IOException("poll: " + Errno.Text(err));
                }
                if (fds[^1].Revents != 0) return;
                for (int i = 0; i < _queueEvents.Length; i++)
                {
                    if (fds[i].Revents == 0) continue;
                    _queueEvents[i].Drain();
                    _transport.ProcessQueue(i);
                }
            }
        }
        catch (Exception e)
        {
            // Never take the VMM down from a device thread; the guest sees a device that stopped answering.
            VirtioLog.WorkerFailed(_logger, e, _transport.Device.Id);
        }
    }

    /// <summary>Stops the thread (after the request in flight) and closes the eventfds.</summary>
    public void Dispose()
    {
        int previous = Interlocked.Exchange(ref _state, 2);
        if (previous == 2) return;
        if (previous == 1)
        {
            _stop.Signal();
            _thread.Join();
        }
        foreach (var e in _queueEvents) e.Dispose();
        _stop.Dispose();
    }
}
