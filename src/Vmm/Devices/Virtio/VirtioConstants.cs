namespace FireSharp.Devices.Virtio;

/// <summary>Device types (virtio 1.x, "Device Types").</summary>
public enum VirtioDeviceType : uint
{
    Net = 1,
    Block = 2,
    Console = 3,
    Entropy = 4,
    Vsock = 19,
}

/// <summary>Device status bits (virtio 1.x, "Device Status Field").</summary>
public static class VirtioStatus
{
    public const uint Acknowledge = 1;
    public const uint Driver = 2;
    public const uint DriverOk = 4;
    public const uint FeaturesOk = 8;
    public const uint DeviceNeedsReset = 64;
    public const uint Failed = 128;
}

/// <summary>Feature bits that belong to the transport and the ring, not to one device type (virtio 1.x, "Reserved Feature Bits").</summary>
public static class VirtioFeatures
{
    public const int IndirectDescBit = 28;
    public const int EventIdxBit = 29;
    public const int Version1Bit = 32;

    public const ulong IndirectDesc = 1UL << IndirectDescBit;
    public const ulong EventIdx = 1UL << EventIdxBit;
    public const ulong Version1 = 1UL << Version1Bit;

    /// <summary>What every FireSharp virtio-mmio transport offers on top of the device's own bits.</summary>
    public const ulong Transport = Version1 | EventIdx | IndirectDesc;
}

/// <summary>Register offsets of the virtio-mmio transport, version 2 (virtio 1.x, "MMIO Device Register Layout").</summary>
public static class VirtioMmioRegister
{
    public const uint MagicValue = 0x000;
    public const uint Version = 0x004;
    public const uint DeviceId = 0x008;
    public const uint VendorId = 0x00c;
    public const uint DeviceFeatures = 0x010;
    public const uint DeviceFeaturesSel = 0x014;
    public const uint DriverFeatures = 0x020;
    public const uint DriverFeaturesSel = 0x024;
    public const uint QueueSel = 0x030;
    public const uint QueueNumMax = 0x034;
    public const uint QueueNum = 0x038;
    public const uint QueueReady = 0x044;
    public const uint QueueNotify = 0x050;
    public const uint InterruptStatus = 0x060;
    public const uint InterruptAck = 0x064;
    public const uint Status = 0x070;
    public const uint QueueDescLow = 0x080;
    public const uint QueueDescHigh = 0x084;
    public const uint QueueDriverLow = 0x090;
    public const uint QueueDriverHigh = 0x094;
    public const uint QueueDeviceLow = 0x0a0;
    public const uint QueueDeviceHigh = 0x0a4;
    public const uint ShmSel = 0x0ac;
    public const uint ShmLenLow = 0x0b0;
    public const uint ShmLenHigh = 0x0b4;
    public const uint ShmBaseLow = 0x0b8;
    public const uint ShmBaseHigh = 0x0bc;
    public const uint ConfigGeneration = 0x0fc;
    public const uint Config = 0x100;

    /// <summary>"virt" in little-endian.</summary>
    public const uint Magic = 0x7472_6976;

    /// <summary>The modern (virtio 1.x) layout; 1 is the legacy one, which FireSharp does not implement.</summary>
    public const uint ModernVersion = 2;

    /// <summary>"FSHP" in little-endian; any value is allowed, drivers match on DeviceID.</summary>
    public const uint FireSharpVendorId = 0x5048_5346;
}

/// <summary>InterruptStatus / InterruptACK bits.</summary>
public static class VirtioInterrupt
{
    /// <summary>The device used a buffer in at least one queue.</summary>
    public const uint UsedBuffer = 1;

    /// <summary>The configuration changed (also how DEVICE_NEEDS_RESET is announced).</summary>
    public const uint ConfigChange = 2;
}
