using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;

namespace FireSharp.Devices.Manager;

/// <summary>
/// The registration of every virtio device kind: adding a device means its kind here, one line. The order is
/// the virtio-mmio slot order (kind by kind, each kind's devices in spec order), which snapshots record: append
/// new kinds at the end, or snapshots taken before no longer restore.
/// </summary>
public static class DeviceKinds
{
    public static IReadOnlyList<IVirtioDeviceKind> Virtio { get; } =
    [
        BlockDeviceKind.Instance,
        VsockDeviceKind.Instance,
        NetDeviceKind.Instance,
        RngDeviceKind.Instance,
    ];

    /// <summary>The virtio kind named <paramref name="kind"/>, or null.</summary>
    public static IVirtioDeviceKind? Find(string kind) => Virtio.FirstOrDefault(k => k.Kind == kind);
}
