namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>Placing a <see cref="VirtioVsock"/> into a VM.</summary>
public sealed partial class VirtioVsock
{
    private EventFd? _irqEvent;

    /// <summary>The transport at the device's virtio-mmio slot (after <see cref="AttachToVm"/>).</summary>
    public VirtioMmioTransport? Transport => _transport;

    /// <summary>The slot it occupies (after <see cref="AttachToVm"/>); -1 before.</summary>
    public int Slot { get; private set; } = -1;

    /// <summary>
    /// Puts the device into virtio-mmio slot <paramref name="slot"/> of a VM: transport, irqfd (or KVM_IRQ_LINE),
    /// ioeventfd for the three queues (or MMIO-exit notification), MMIO registration; then starts the event loop.
    /// The command line needs <see cref="VirtioMmioLayout.CmdlineParameter"/>(slot). With <paramref name="quiesced"/>
    /// the transport starts quiesced (a snapshot restore sets its state first, then unquiesces it).
    /// </summary>
    public VirtioMmioTransport AttachToVm(VirtioHost host, int slot, bool quiesced = false)
    {
        ArgumentNullException.ThrowIfNull(host);
        if (_transport is not null) throw new InvalidOperationException("the vsock device is already attached");
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
                VsockLog.FallBack(_logger, Id, "irqfd", e.Message);
            }
        }
        line ??= host.InterruptLine(gsi);

        var transport = new VirtioMmioTransport(this, host.Memory, line, host.Logger) { QueueNotifyHandler = Notify };
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
                VsockLog.FallBack(_logger, Id, "ioeventfd", e.Message);
            }
        }
        if (quiesced) transport.Quiesce();
        Attach(transport);
        Slot = slot;
        host.RegisterMmio(address, VirtioMmioTransport.WindowSize, transport, $"virtio-vsock (cid {GuestCid}, {UdsPath})");
        Start();
        VsockLog.Placed(_logger, Id, GuestCid, UdsPath, address, gsi, notifyKind, interruptKind);
        return transport;
    }
}
