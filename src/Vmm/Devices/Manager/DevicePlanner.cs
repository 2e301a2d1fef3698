using FireSharp.Devices.Virtio;

namespace FireSharp.Devices.Manager;

/// <summary>
/// One virtio device of a VM as planned from its spec, before anything is opened: its kind, its config (index
/// <see cref="Index"/> of <see cref="KindConfigs"/>, the spec's configs of that kind), its id and its virtio-mmio slot.
/// </summary>
public sealed record PlannedDevice(IVirtioDeviceKind Kind, IReadOnlyList<IDeviceConfig> KindConfigs, int Index, string Id, int Slot)
{
    public IDeviceConfig Config => KindConfigs[Index];

    /// <summary>The slot's 4 KiB MMIO window.</summary>
    public ulong Address => VirtioMmioLayout.Address(Slot);

    /// <summary>The slot's GSI (edge-triggered).</summary>
    public uint Gsi => VirtioMmioLayout.Gsi(Slot);

    /// <summary>Its descriptor as far as it is known before the device is opened: id, kind and slot.</summary>
    public DeviceDescriptor Descriptor => new(Id, Kind.Kind)
    {
        Settings = new Dictionary<string, string>(StringComparer.Ordinal) { [DeviceManager.SlotKey] = Slot.ToString(System.Globalization.CultureInfo.InvariantCulture) },
    };
}

/// <summary>
/// Where a VM's devices go: the one place that allocates virtio-mmio slots (and with them MMIO windows and GSIs,
/// <see cref="VirtioMmioLayout"/>). Kinds take slots in <see cref="DeviceKinds"/> order, each kind's devices in
/// spec order.
/// </summary>
public static class DevicePlanner
{
    /// <summary>
    /// The virtio devices <paramref name="configs"/> become, in slot order, checked before anything is opened: a
    /// registered kind for each, at most 17 in all, each kind's own checks and limit, and ids unique in the VM
    /// (the standard devices' included). Throws a <see cref="DeviceConfigException"/>.
    /// </summary>
    public static IReadOnlyList<PlannedDevice> Plan(IReadOnlyList<IDeviceConfig> configs)
    {
        ArgumentNullException.ThrowIfNull(configs);
        foreach (var c in configs)
        {
            if (DeviceKinds.Find(c.Kind) is null)
                throw new ArgumentException($"no device kind '{c.Kind}' is registered (DeviceKinds)", nameof(configs));
        }
        VirtioMmioLayout.CheckCount(configs.Count);
        var plan = new List<PlannedDevice>(configs.Count);
        var ids = StandardDevices.Descriptors.Select(d => d.Id).ToHashSet(StringComparer.Ordinal);
        foreach (var kind in DeviceKinds.Virtio)
        {
            var mine = configs.Where(c => c.Kind == kind.Kind).ToList();
            if (mine.Count == 0) continue;
            if (mine.Count > kind.MaxCount)
                throw new VirtioConfigException(kind.Field(kind.MaxCount), VirtioConfigError.TooManyDevices,
                    $"{mine.Count} {kind.Noun}s given; a VM has at most {kind.MaxCount}");
            kind.Validate(mine);
            for (int i = 0; i < mine.Count; i++)
            {
                string id = kind.Id(mine, i);
                if (!ids.Add(id))
                    throw new VirtioConfigException(kind.Field(i), VirtioConfigError.DuplicateId, $"device id '{id}' is taken by another device of the VM");
                plan.Add(new PlannedDevice(kind, mine, i, id, plan.Count));
            }
        }
        return plan;
    }

    /// <summary>
    /// The descriptors of a VM built for <paramref name="configs"/>, as far as they are known before anything is
    /// opened (ids, kinds, slots): the standard devices, then the virtio devices in slot order.
    /// </summary>
    public static IReadOnlyList<DeviceDescriptor> Descriptors(IReadOnlyList<IDeviceConfig> configs) =>
        [.. StandardDevices.Descriptors, .. Plan(configs).Select(p => p.Descriptor)];

    /// <summary>
    /// What a Linux command line needs for the plan: per kind (in slot order) a <c>virtio_mmio.device=</c> per
    /// device, then the kind's own parameters (root=, ip=). Starts with a space; empty without devices.
    /// </summary>
    public static string KernelParameters(IReadOnlyList<PlannedDevice> plan)
    {
        var parts = new List<string>();
        foreach (var group in plan.GroupBy(p => p.Kind))
        {
            foreach (var p in group) parts.Add(VirtioMmioLayout.CmdlineParameter(p.Slot));
            parts.AddRange(group.Key.KernelParameters(group.First().KindConfigs));
        }
        return parts.Count == 0 ? "" : " " + string.Join(' ', parts);
    }
}
