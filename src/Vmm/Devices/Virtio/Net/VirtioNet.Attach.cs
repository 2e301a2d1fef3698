namespace FireSharp.Devices.Virtio.Net;

/// <summary>Placing a <see cref="VirtioNet"/> into a VM.</summary>
public sealed partial class VirtioNet
{
    /// <summary>The transport at the device's virtio-mmio slot (after <see cref="AttachToVm"/>).</summary>
    public VirtioMmioTransport? Transport => _loop.Transport;

    /// <summary>The slot it occupies (after <see cref="AttachToVm"/>); -1 before.</summary>
    public int Slot => _loop.Slot;

    /// <summary>
    /// Puts the device into virtio-mmio slot <paramref name="slot"/> of a VM (<see cref="VirtioEventLoop.AttachToVm"/>:
    /// transport, irqfd or KVM_IRQ_LINE, ioeventfd for both queues or MMIO-exit notification, MMIO registration);
    /// then starts the event loop. With <paramref name="quiesced"/> the transport starts quiesced (a restore sets
    /// its state, then unquiesces). The command line needs <see cref="VirtioMmioLayout.CmdlineParameter"/>(slot).
    /// </summary>
    public VirtioMmioTransport AttachToVm(VirtioHost host, int slot, bool quiesced = false)
    {
        string mac = NetworkInterfaceSpec.FormatMac(_mac);
        var placed = _loop.AttachToVm(host, slot, this, quiesced, $"virtio-net ({_backend.Name}, {mac})",
            (mechanism, error) => NetLog.FallBack(_logger, Id, mechanism, error));
        NetLog.Placed(_logger, Id, _backend.Name, mac, placed.Address, placed.Gsi, placed.NotifyKind, placed.InterruptKind,
            _backend.SupportedOffloads.ToString());
        return placed.Transport;
    }
}
