namespace FireSharp.Devices.Virtio;

/// <summary>
/// Where virtio-mmio devices live: one 4 KiB window each from 0xC0001000 in the 32-bit MMIO gap (0xC0000000
/// is the boot timer), one edge-triggered GSI each from 5 (the range 5..23 of Firecracker's layout), at most 17
/// devices as there (GSIs 5..21; 22 and 23 stay free for other uses). Linux finds them on the kernel command line
/// (<c>virtio_mmio.device=4K@0xc0001000:5</c>, CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
/// </summary>
public static class VirtioMmioLayout
{
    public const ulong FirstAddress = 0xC000_1000;
    public const uint FirstGsi = 5;
    public const int MaxDevices = 17;
    public const uint LastGsi = FirstGsi + MaxDevices - 1;

    public static ulong Address(int slot) => FirstAddress + (ulong)CheckSlot(slot) * VirtioMmioTransport.WindowSize;

    public static uint Gsi(int slot) => FirstGsi + (uint)CheckSlot(slot);

    /// <summary>The kernel parameter that announces the device in <paramref name="slot"/>.</summary>
    public static string CmdlineParameter(int slot) => $"virtio_mmio.device=4K@0x{Address(slot):x}:{Gsi(slot)}";

    /// <summary>Throws the typed error when <paramref name="count"/> devices do not fit.</summary>
    public static void CheckCount(int count, string field = "virtio devices")
    {
        if (count > MaxDevices)
            throw new VirtioConfigException(field, VirtioConfigError.TooManyDevices,
                $"{count} virtio devices requested; at most {MaxDevices} fit (one GSI each, {FirstGsi}..{LastGsi})");
    }

    private static int CheckSlot(int slot) =>
        slot is >= 0 and < MaxDevices ? slot : throw new ArgumentOutOfRangeException(nameof(slot), slot, $"virtio-mmio slot must be 0..{MaxDevices - 1}");
}
