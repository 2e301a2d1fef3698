using System.Globalization;
using FireSharp.Devices.Virtio;

namespace FireSharp.Snapshot;

/// <summary>
/// How a virtio-blk drive is recorded in a snapshot's device list: a <see cref="DeviceDescriptor"/> of kind
/// <see cref="SnapshotRestore.DriveKind"/>, id = the drive id, and settings for the virtio-mmio slot, the
/// image path, read-only, root, GET_ID serial and the image size in bytes (a clone's image must have it).
/// </summary>
public static class DriveSettings
{
    public const string Slot = "slot", Path = "path", ReadOnly = "readOnly", Root = "root", Serial = "serial", SizeBytes = "sizeBytes";

    /// <summary>The descriptor of drive <paramref name="slot"/>; <paramref name="sizeBytes"/> null when the image is not open (planning).</summary>
    public static DeviceDescriptor Describe(IReadOnlyList<DriveSpec> drives, int slot, ulong? sizeBytes)
    {
        var d = drives[slot];
        var settings = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Slot] = slot.ToString(CultureInfo.InvariantCulture),
            [Path] = d.Path,
            [ReadOnly] = d.ReadOnly ? "true" : "false",
            [Root] = d.IsRoot ? "true" : "false",
            [Serial] = d.Serial ?? "",
        };
        if (sizeBytes is { } size) settings[SizeBytes] = size.ToString(CultureInfo.InvariantCulture);
        return new DeviceDescriptor(DriveSpec.EffectiveId(drives, slot), SnapshotRestore.DriveKind) { Settings = settings };
    }

    /// <summary>
    /// The drive a snapshot's descriptor describes, and its recorded size; throws <see cref="InvalidDataException"/>
    /// for settings that are missing or do not parse.
    /// </summary>
    public static (DriveSpec Drive, int Slot, ulong SizeBytes) Parse(DeviceDescriptor descriptor)
    {
        string Get(string key) => descriptor.Settings.TryGetValue(key, out var v)
            ? v : throw new InvalidDataException($"drive '{descriptor.Id}' has no '{key}' setting");
        bool Flag(string key) => Get(key) switch
        {
            "true" => true,
            "false" => false,
            var v => throw new InvalidDataException($"drive '{descriptor.Id}': '{key}' is '{v}', not true/false"),
        };
        if (!int.TryParse(Get(Slot), NumberStyles.None, CultureInfo.InvariantCulture, out int slot))
            throw new InvalidDataException($"drive '{descriptor.Id}': bad slot '{Get(Slot)}'");
        if (!ulong.TryParse(Get(SizeBytes), NumberStyles.None, CultureInfo.InvariantCulture, out ulong size))
            throw new InvalidDataException($"drive '{descriptor.Id}': bad size '{Get(SizeBytes)}'");
        string serial = Get(Serial);
        var drive = new DriveSpec
        {
            Id = descriptor.Id,
            Path = Get(Path),
            ReadOnly = Flag(ReadOnly),
            IsRoot = Flag(Root),
            Serial = serial.Length == 0 ? null : serial,
        };
        return (drive, slot, size);
    }
}
