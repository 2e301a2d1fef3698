using System.Globalization;

namespace FireSharp.Devices.Manager;

/// <summary>
/// A restore's replacement for one device's host side: a clone's own disk copy, tap or socket path. <see cref="Id"/>
/// null applies to the kind's only device (the vsock device).
/// </summary>
public readonly record struct DeviceOverride(string Kind, string? Id, string Value);

/// <summary>
/// The device half of a snapshot restore: the configs a snapshot's descriptors record, each parsed by its own
/// kind (matched by <see cref="DeviceDescriptor.Kind"/>) with this clone's overrides applied, and checked to land
/// in the virtio-mmio slots the guest's drivers know them at. Descriptors of kinds that are not virtio kinds
/// (the standard devices, or kinds this build does not have) are left to the caller.
/// </summary>
public static class DeviceRestore
{
    /// <summary>Throws <see cref="DeviceRestoreException"/> for anything that cannot be rebuilt as recorded.</summary>
    public static IReadOnlyList<IDeviceConfig> ConfigsFor(IReadOnlyList<DeviceDescriptor> saved, IReadOnlyList<DeviceOverride> overrides)
    {
        ArgumentNullException.ThrowIfNull(saved);
        ArgumentNullException.ThrowIfNull(overrides);
        foreach (var o in overrides)
        {
            var kind = DeviceKinds.Find(o.Kind) ?? throw new ArgumentException($"an override for unknown device kind '{o.Kind}'", nameof(overrides));
            if (!saved.Any(d => Matches(o, d)))
                throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch, o.Id is null
                    ? $"an override for the {kind.Noun} was given, but the snapshot has no {o.Kind} device"
                    : $"override for {kind.Noun} '{o.Id}', but the snapshot has no {o.Kind} device with that id");
        }

        var recorded = new List<(DeviceDescriptor Descriptor, IVirtioDeviceKind Kind, int Slot)>();
        foreach (var d in saved)
        {
            if (DeviceKinds.Find(d.Kind) is not { } kind) continue;
            if (!d.Settings.TryGetValue(DeviceManager.SlotKey, out var text)
                || !int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int slot))
                throw new DeviceRestoreException(DeviceRestoreProblem.Corrupt, $"{kind.Noun} '{d.Id}' has no valid '{DeviceManager.SlotKey}' setting");
            recorded.Add((d, kind, slot));
        }

        var configs = new List<IDeviceConfig>(recorded.Count);
        foreach (var (d, kind, _) in recorded.OrderBy(r => r.Slot))
        {
            string? hostSide = null;
            foreach (var o in overrides)
                if (Matches(o, d)) hostSide = o.Value;
            configs.Add(kind.Restore(d, hostSide));
        }

        IReadOnlyList<PlannedDevice> plan;
        try
        {
            plan = DevicePlanner.Plan(configs);
        }
        catch (DeviceConfigException e)
        {
            throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch, $"the restored devices are not a valid set: {e.Message}", e);
        }
        foreach (var (d, kind, slot) in recorded)
        {
            var placed = plan.First(p => p.Kind == kind && p.Id == d.Id);
            if (placed.Slot != slot)
                throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch,
                    $"{kind.Noun} '{d.Id}' was in virtio-mmio slot {slot}; this FireSharp places it in slot {placed.Slot}");
        }
        return configs;
    }

    private static bool Matches(DeviceOverride o, DeviceDescriptor d) => o.Kind == d.Kind && (o.Id is null || o.Id == d.Id);
}
