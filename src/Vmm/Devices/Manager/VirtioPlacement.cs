using FireSharp.Devices.Virtio;

namespace FireSharp.Devices.Manager;

/// <summary>
/// One virtio device placed into a VM by the <see cref="DeviceManager"/>: its slot (window and GSI), the transport
/// in front of it, how it is notified and interrupts, the thread it runs on, and its snapshot descriptor.
/// </summary>
public sealed class VirtioPlacement
{
    private readonly VirtioEventLoop? _queueLoop;
    private readonly EventFd? _irqEvent;
    private int _disposed;

    private VirtioPlacement(PlannedDevice planned, IVirtioDevice device, VirtioMmioTransport transport, DeviceDescriptor descriptor,
        string notifyKind, string interruptKind, VirtioEventLoop? queueLoop, EventFd? irqEvent)
    {
        Planned = planned;
        Device = device;
        Transport = transport;
        Descriptor = descriptor;
        NotifyKind = notifyKind;
        InterruptKind = interruptKind;
        _queueLoop = queueLoop;
        _irqEvent = irqEvent;
    }

    public PlannedDevice Planned { get; }
    public int Slot => Planned.Slot;
    public ulong Address => Planned.Address;
    public uint Gsi => Planned.Gsi;
    public IVirtioDeviceKind Kind => Planned.Kind;
    public IDeviceConfig Config => Planned.Config;
    public IVirtioDevice Device { get; }
    public VirtioMmioTransport Transport { get; }

    /// <summary>What snapshots record: the kind's settings and the slot. The device's state is its transport's.</summary>
    public DeviceDescriptor Descriptor { get; }

    /// <summary>"ioeventfd", or "MMIO exit" when KVM could not take the queue eventfds.</summary>
    public string NotifyKind { get; }

    /// <summary>"irqfd", or "KVM_IRQ_LINE" when KVM could not take the interrupt eventfd.</summary>
    public string InterruptKind { get; }

    /// <summary>
    /// Wires <paramref name="device"/> into the VM at its planned slot, the one copy of this wiring: an irqfd (or,
    /// when that fails or is unavailable, KVM_IRQ_LINE), a transport whose QueueNotify wakes the device's thread
    /// (quiesced if asked), the queue eventfds as ioeventfds (or MMIO-exit notification), the MMIO window, and the
    /// thread: the device's own <see cref="VirtioEventLoop"/> (<see cref="IVirtioLoopDevice"/>) or a queue-only one.
    /// </summary>
    internal static VirtioPlacement Place(PlannedDevice planned, IVirtioDevice device, DeviceHost host, bool quiesced)
    {
        string name = planned.Kind.Describe(device);
        EventFd? irqEvent = null;
        VirtioEventLoop? queueLoop = null;
        try
        {
            IInterruptLine? line = null;
            string interruptKind = "KVM_IRQ_LINE";
            if (host.AssignIrqfd is { } assignIrqfd)
            {
                var e = EventFd.Create();
                try
                {
                    assignIrqfd(e.Fd, planned.Gsi);
                    irqEvent = e;
                    line = new EventFdInterruptLine(e);
                    interruptKind = "irqfd";
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    e.Dispose();
                    VirtioLog.FallBack(host.Logger, name, "irqfd", ex.Message);
                }
            }
            line ??= host.InterruptLine(planned.Gsi);

            Func<int, EventFd> queueEvent;
            Action<int> notify;
            Action<VirtioMmioTransport> attach;
            Action start;
            if (device is IVirtioLoopDevice own)
            {
                (queueEvent, notify, attach, start) = (own.QueueEvent, own.Notify, own.Attach, own.Start);
            }
            else
            {
                var loop = queueLoop = VirtioEventLoop.ForQueues(planned.Kind.Kind, device.QueueCount, e => VirtioLog.WorkerFailed(host.Logger, e, device.Id));
                (queueEvent, notify, attach, start) = (loop.QueueEvent, loop.Notify, t => loop.Attach(device, t), loop.Start);
            }

            var transport = new VirtioMmioTransport(device, host.Memory, line, host.Logger) { QueueNotifyHandler = notify };
            if (quiesced) transport.Quiesce();
            string notifyKind = "MMIO exit";
            if (host.AssignIoeventfd is { } assignIoeventfd)
            {
                try
                {
                    for (int q = 0; q < device.QueueCount; q++)
                        assignIoeventfd(queueEvent(q).Fd, planned.Address + VirtioMmioRegister.QueueNotify, (uint)q);
                    notifyKind = "ioeventfd";
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    // A queue whose eventfd KVM did take still works through it; the rest exit to the VMM.
                    VirtioLog.FallBack(host.Logger, name, "ioeventfd", ex.Message);
                }
            }
            attach(transport);
            var settings = new Dictionary<string, string>(planned.Kind.Settings(planned.Config, device), StringComparer.Ordinal)
            {
                [DeviceManager.SlotKey] = planned.Descriptor.Settings[DeviceManager.SlotKey],
            };
            var descriptor = new DeviceDescriptor(planned.Id, planned.Kind.Kind) { Settings = settings };
            host.RegisterMmio(planned.Address, VirtioMmioTransport.WindowSize, transport, name);
            start();
            VirtioLog.Placed(host.Logger, name, planned.Address, planned.Gsi, notifyKind, interruptKind);
            return new VirtioPlacement(planned, device, transport, descriptor, notifyKind, interruptKind, queueLoop, irqEvent);
        }
        catch
        {
            queueLoop?.Dispose();
            irqEvent?.Dispose();
            throw;
        }
    }

    /// <summary>Stops the device's thread, disposes the device (and what it opened), then closes the interrupt eventfd.</summary>
    internal void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _queueLoop?.Dispose(); // a device with its own loop stops it in its Dispose
        (Device as IDisposable)?.Dispose();
        _irqEvent?.Dispose();
    }
}
