namespace FireSharp.Devices;

/// <summary>
/// One device of a machine, as a snapshot records it: its id (unique within the VM; its state is stored under
/// it), its kind (what a restore builds: "serial16550", "virtio-blk", ...) and the settings its kind needs to
/// rebuild it (host paths and the like, which restore overrides may replace). Each device kind writes and reads
/// its own settings (see <see cref="Manager.IVirtioDeviceKind"/>); snapshots only carry them.
/// </summary>
public sealed record DeviceDescriptor(string Id, string Kind)
{
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();

    public override string ToString() => $"{Id} ({Kind})";

    public bool Equals(DeviceDescriptor? other) =>
        other is not null && Id == other.Id && Kind == other.Kind
        && Settings.Count == other.Settings.Count
        && Settings.All(kv => other.Settings.TryGetValue(kv.Key, out var v) && v == kv.Value);

    public override int GetHashCode() => HashCode.Combine(Id, Kind, Settings.Count);
}
