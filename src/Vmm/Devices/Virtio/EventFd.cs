using Microsoft.Win32.SafeHandles;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// A Linux eventfd (non-blocking, close-on-exec): the doorbell between a guest and a device worker. KVM can
/// signal it on a guest MMIO write (ioeventfd) or inject an interrupt when it is signalled (irqfd); without
/// KVM it works the same between threads.
/// </summary>
public sealed class EventFd : IDisposable
{
    private readonly SafeFileHandle _handle;

    private EventFd(SafeFileHandle handle) => _handle = handle;

    public static EventFd Create()
    {
        int fd = Libc.EventFd(0, Libc.EFD_NONBLOCK | Libc.EFD_CLOEXEC);
        if (fd < 0) throw Errno.LastIOError("eventfd");
        return new EventFd(new SafeFileHandle(fd, ownsHandle: true));
    }

    /// <summary>The descriptor, for KVM_IOEVENTFD / KVM_IRQFD. Valid while this object is alive.</summary>
    public int Fd => (int)_handle.DangerousGetHandle();

    /// <summary>Adds one to the counter (wakes a waiter). A counter at its maximum stays signalled.</summary>
    public void Signal()
    {
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            ulong one = 1;
            while (Libc.Write(Fd, ref one, sizeof(ulong)) < 0)
            {
                int err = Errno.Last;
                if (err == Errno.EINTR) continue;
                if (err == Errno.EAGAIN) return; // already signalled as far as it goes
                throw Errno.IOError("eventfd write", err);
            }
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    /// <summary>Reads and clears the counter; 0 when it was not signalled.</summary>
    public ulong Drain()
    {
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            ulong value = 0;
            while (Libc.Read(Fd, ref value, sizeof(ulong)) < 0)
            {
                int err = Errno.Last;
                if (err == Errno.EINTR) continue;
                if (err == Errno.EAGAIN) return 0;
                throw Errno.IOError("eventfd read", err);
            }
            return value;
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    public void Dispose() => _handle.Dispose();
}

/// <summary>
/// An edge-triggered interrupt line through an eventfd bound to a GSI with KVM_IRQFD: a pulse is one
/// eventfd write and never leaves the calling thread for an ioctl.
/// </summary>
public sealed class EventFdInterruptLine(EventFd eventFd) : IInterruptLine
{
    public EventFd EventFd { get; } = eventFd;

    /// <summary>Edge semantics only: raising the line sends an edge, lowering it does nothing.</summary>
    public void SetLevel(bool high)
    {
        if (high) EventFd.Signal();
    }

    public void Pulse() => EventFd.Signal();
}
