namespace FireSharp.Devices.Virtio.Net;

/// <summary>Placing a <see cref="VirtioNet"/> into a VM.</summary>
public sealed partial class VirtioNet
{
    private EventFd? _irqEvent;

    /// <summary>The transport at the device's virtio-mmio slot (after <see cref="AttachToVm"/>).</summary>
    public VirtioMmioTransport? Transport => _transport;

    /// <summary>The slot it occupies (after <see cref="AttachToVm"/>); -1 before.</summary>
    public int Slot { get; private set; } = -1;

    /// <summary>
    /// Puts the device into virtio-mmio slot <paramref name="slot"/> of a VM: transport, irqfd (or KVM_IRQ_LINE),
    /// ioeventfd for both queues (or MMIO-exit notification), MMIO registration; then starts the event loop.
    /// With <paramref name="quiesced"/> the transport starts quiesced (a restore sets its state, then unquiesces).
    /// The command line needs <see cref="VirtioMmioLayout.CmdlineParameter"/>(slot).
    /// </summary>
    public VirtioMmioTransport AttachToVm(VirtioHost host, int slot, bool quiesced = false)
    {
        ArgumentNullException.ThrowIfNull(host);
        if (_transport is not null) throw new InvalidOperationException("the net device is already attached");
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
                NetLog.FallBack(_logger, Id, "irqfd", e.Message);
            }
        }
        line ??= host.InterruptLine(gsi);

        var transport = new VirtioMmioTransport(this, host.Memory, line, host.Logger) { QueueNotifyHandler = Notify };
        if (quiesced) transport.Quiesce();
        string notifyKind = "MMIO exit";
        if (host.AssignIoeventfd is { } assignIoeventfd)
        {
            try
            {
                for (int q = 0; q < QueueCount; q++)
                    assignIoeventfd(QueueEvent(q).Fd, address + VirtioMmioRegister.QueueNotify, (uint)q);
                notifyKind = "ioeventfd";
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                NetLog.FallBack(_logger, Id, "ioeventfd", e.Message);
            }
        }
        Attach(transport);
        Slot = slot;
        host.RegisterMmio(address, VirtioMmioTransport.WindowSize, transport, $"virtio-net ({_backend.Name}, {NetworkInterfaceSpec.FormatMac(_mac)})");
        Start();
        NetLog.Placed(_logger, Id, _backend.Name, NetworkInterfaceSpec.FormatMac(_mac), address, gsi, notifyKind, interruptKind,
            _backend.SupportedOffloads.ToString());
        return transport;
    }
}
