namespace FireSharp.Devices;

/// <summary>
/// One device of a VM spec, as the user configures it: a drive, the vsock device, a network interface, the
/// entropy device. <see cref="Kind"/> names the <see cref="Manager.IVirtioDeviceKind"/> that validates, opens,
/// places and persists it; nothing else in the VMM looks at the concrete type.
/// </summary>
public interface IDeviceConfig
{
    /// <summary>The device kind ("virtio-blk", ...): the key of its <see cref="Manager.IVirtioDeviceKind"/> and of its snapshot descriptors.</summary>
    string Kind { get; }
}
