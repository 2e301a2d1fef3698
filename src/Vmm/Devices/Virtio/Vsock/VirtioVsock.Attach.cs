namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>Placing a <see cref="VirtioVsock"/> into a VM.</summary>
public sealed partial class VirtioVsock
{
    /// <summary>The transport at the device's virtio-mmio slot (after <see cref="AttachToVm"/>).</summary>
    public VirtioMmioTransport? Transport => _loop.Transport;

    /// <summary>The slot it occupies (after <see cref="AttachToVm"/>); -1 before.</summary>
    public int Slot => _loop.Slot;

    /// <summary>
    /// Puts the device into virtio-mmio slot <paramref name="slot"/> of a VM (<see cref="VirtioEventLoop.AttachToVm"/>:
    /// transport, irqfd or KVM_IRQ_LINE, ioeventfd for the three queues or MMIO-exit notification, MMIO
    /// registration); then starts the event loop. The command line needs <see cref="VirtioMmioLayout.CmdlineParameter"/>(slot).
    /// With <paramref name="quiesced"/> the transport starts quiesced (a snapshot restore sets its state first, then unquiesces it).
    /// </summary>
    public VirtioMmioTransport AttachToVm(VirtioHost host, int slot, bool quiesced = false)
    {
        var placed = _loop.AttachToVm(host, slot, this, quiesced, $"virtio-vsock (cid {GuestCid}, {UdsPath})",
            (mechanism, error) => VsockLog.FallBack(_logger, Id, mechanism, error));
        VsockLog.Placed(_logger, Id, GuestCid, UdsPath, placed.Address, placed.Gsi, placed.NotifyKind, placed.InterruptKind);
        return placed.Transport;
    }
}
