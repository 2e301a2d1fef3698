namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>The transport a <see cref="VirtioVsock"/> runs through (the device manager places it into a VM).</summary>
public sealed partial class VirtioVsock
{
    /// <summary>The transport in front of the device (after <see cref="Attach"/>).</summary>
    public VirtioMmioTransport? Transport => _loop.Transport;
}
