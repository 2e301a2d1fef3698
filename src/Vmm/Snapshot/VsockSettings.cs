using System.Globalization;
using FireSharp.Devices.Virtio.Vsock;

namespace FireSharp.Snapshot;

/// <summary>
/// How the virtio-vsock device is recorded in a snapshot's device list: a <see cref="DeviceDescriptor"/> of kind
/// <see cref="SnapshotRestore.VsockKind"/>, id <see cref="Id"/>, with the guest CID, the hybrid host socket path
/// the snapshotted VM used, and its virtio-mmio slot (the guest's driver knows the device at that slot's address).
/// </summary>
public static class VsockSettings
{
    public const string Id = "vsock";
    public const string Cid = "cid", Path = "path", Slot = "slot";

    public static DeviceDescriptor Describe(VsockDeviceSpec spec, int slot) =>
        new(Id, SnapshotRestore.VsockKind)
        {
            Settings = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                [Cid] = spec.GuestCid.ToString(CultureInfo.InvariantCulture),
                [Path] = spec.UdsPath,
                [Slot] = slot.ToString(CultureInfo.InvariantCulture),
            },
        };

    /// <summary>The vsock device a descriptor describes; throws <see cref="InvalidDataException"/> for missing or bad settings.</summary>
    public static (VsockDeviceSpec Spec, int Slot) Parse(DeviceDescriptor descriptor)
    {
        string Get(string key) => descriptor.Settings.TryGetValue(key, out var v)
            ? v : throw new InvalidDataException($"vsock device '{descriptor.Id}' has no '{key}' setting");
        if (!ulong.TryParse(Get(Cid), NumberStyles.None, CultureInfo.InvariantCulture, out ulong cid))
            throw new InvalidDataException($"vsock device '{descriptor.Id}': bad guest CID '{Get(Cid)}'");
        if (!int.TryParse(Get(Slot), NumberStyles.None, CultureInfo.InvariantCulture, out int slot))
            throw new InvalidDataException($"vsock device '{descriptor.Id}': bad slot '{Get(Slot)}'");
        string path = Get(Path);
        if (path.Length == 0) throw new InvalidDataException($"vsock device '{descriptor.Id}': empty socket path");
        return (new VsockDeviceSpec(cid, path), slot);
    }
}
