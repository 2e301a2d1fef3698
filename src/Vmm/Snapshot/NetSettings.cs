using System.Globalization;
using FireSharp.Devices.Virtio.Net;

namespace FireSharp.Snapshot;

/// <summary>
/// How a virtio-net interface is recorded in a snapshot's device list: a <see cref="DeviceDescriptor"/> of kind
/// <see cref="SnapshotRestore.NetKind"/>, id = the interface id, with its virtio-mmio slot, the guest MAC (the
/// restored guest keeps it), the tap it used and whether that tap was automatic (a restore then creates a new
/// automatic one unless <see cref="RestoreOverrides.TapNames"/> names a tap).
/// </summary>
public static class NetSettings
{
    public const string Slot = "slot", Tap = "tap", Auto = "auto", Mac = "mac";

    public static DeviceDescriptor Describe(NetworkInterfaceSpec spec, int slot, string? tapInUse, string? mac) =>
        new(spec.Id, SnapshotRestore.NetKind)
        {
            Settings = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                [Slot] = slot.ToString(CultureInfo.InvariantCulture),
                [Tap] = tapInUse ?? spec.TapName ?? "",
                [Auto] = spec.TapName is null ? "true" : "false",
                [Mac] = mac ?? spec.Mac ?? "",
            },
        };

    /// <summary>The interface a descriptor describes (MAC fixed, tap as recorded); throws <see cref="InvalidDataException"/>.</summary>
    public static (NetworkInterfaceSpec Spec, int Slot) Parse(DeviceDescriptor descriptor)
    {
        string Get(string key) => descriptor.Settings.TryGetValue(key, out var v)
            ? v : throw new InvalidDataException($"network interface '{descriptor.Id}' has no '{key}' setting");
        if (!int.TryParse(Get(Slot), NumberStyles.None, CultureInfo.InvariantCulture, out int slot))
            throw new InvalidDataException($"network interface '{descriptor.Id}': bad slot '{Get(Slot)}'");
        bool auto = Get(Auto) switch
        {
            "true" => true,
            "false" => false,
            var v => throw new InvalidDataException($"network interface '{descriptor.Id}': '{Auto}' is '{v}', not true/false"),
        };
        string mac = Get(Mac), tap = Get(Tap);
        try
        {
            NetworkInterfaceSpec.ParseMac(mac);
            if (!auto) TapBackend.ValidateName(tap);
        }
        catch (NetConfigException e)
        {
            throw new InvalidDataException($"network interface '{descriptor.Id}': {e.Message}", e);
        }
        return (new NetworkInterfaceSpec { Id = descriptor.Id, TapName = auto ? null : tap, Mac = mac }, slot);
    }

    /// <summary>
    /// The snapshot's interfaces in slot order with this clone's taps: <see cref="RestoreOverrides.TapNames"/>
    /// where given, else the recorded tap (or a new automatic one for an automatic tap).
    /// </summary>
    public static List<NetworkInterfaceSpec> InterfacesFor(LoadedSnapshot snapshot, RestoreOverrides overrides)
    {
        var found = new List<(NetworkInterfaceSpec Spec, int Slot)>();
        foreach (var d in snapshot.State.Config.Devices.Where(d => d.Kind == SnapshotRestore.NetKind))
        {
            try
            {
                found.Add(Parse(d));
            }
            catch (InvalidDataException e)
            {
                throw new SnapshotException(SnapshotErrorReason.Corrupt, $"{snapshot.Directory}: {e.Message}", e);
            }
        }
        var list = found.OrderBy(f => f.Slot).Select(f => overrides.TapNames.TryGetValue(f.Spec.Id, out var tap) ? f.Spec with { TapName = tap } : f.Spec).ToList();
        try
        {
            NetworkInterfaceSpec.Validate(list);
        }
        catch (NetConfigException e)
        {
            throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch, $"{snapshot.Directory}: the restored network interfaces are not a valid set: {e.Message}", e);
        }
        return list;
    }

    /// <summary>Each rebuilt interface must sit in the slot the guest's driver knows it at.</summary>
    public static void CheckSlots(LoadedSnapshot snapshot, IReadOnlyList<VirtioNet> nics)
    {
        foreach (var d in snapshot.State.Config.Devices.Where(d => d.Kind == SnapshotRestore.NetKind))
        {
            int saved = Parse(d).Slot;
            var nic = nics.FirstOrDefault(n => n.Id == "virtio-net:" + d.Id);
            if (nic is not null && nic.Slot != saved)
                throw new SnapshotException(SnapshotErrorReason.DeviceSetMismatch,
                    $"{snapshot.Directory}: network interface '{d.Id}' was in virtio-mmio slot {saved}; this FireSharp places it in slot {nic.Slot}");
        }
    }
}
