namespace FireSharp.Devices;

/// <summary>
/// A device whose state goes into snapshots. The bytes are the device's own versioned encoding (a
/// leading format byte, then little-endian fields via BinaryWriter/BinaryPrimitives); restoring
/// validates them and throws <see cref="InvalidDataException"/> on anything malformed, never
/// leaving the device half-restored.
/// </summary>
public interface IStatefulDevice
{
    /// <summary>Stable id of this device instance within a VM (e.g. "com1", "i8042", "virtio-blk:rootfs").</summary>
    string StateId { get; }

    byte[] SaveState();

    void RestoreState(ReadOnlySpan<byte> state);
}
