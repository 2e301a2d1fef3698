using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>e820 / ACPI address range types (the PVH memory map uses the same numbers).</summary>
public enum E820Type : uint
{
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
    Unusable = 5,
}

/// <summary>One entry of the guest's physical memory map.</summary>
public readonly record struct E820Entry(ulong Address, ulong Size, E820Type Type)
{
    public ulong End => Address + Size;
}

public static class E820Map
{
    /// <summary>
    /// The memory map for <paramref name="memBytes"/> of guest RAM laid out by <see cref="MemoryLayout.RamRanges"/>:
    /// RAM [0, 0x9fc00); reserved [0x9fc00, 1 MiB) (MP table and the legacy VGA/BIOS hole, see
    /// <see cref="BootLayout.LegacyAreaEnd"/>); RAM [1 MiB, min(mem, 3 GiB)); and, above 3 GiB of RAM, the rest from 4 GiB.
    /// </summary>
    public static IReadOnlyList<E820Entry> Build(ulong memBytes)
    {
        if (memBytes < BootLayout.MinMemoryBytes)
            throw new BootException(BootErrorReason.MemoryTooSmall,
                $"guest memory of {memBytes} bytes is too small; at least {BootLayout.MinMemoryBytes / MemoryLayout.MiB} MiB is required");
        var map = new List<E820Entry>(4)
        {
            new(0, BootLayout.LowRamEnd, E820Type.Ram),
            new(BootLayout.LowRamEnd, BootLayout.LegacyAreaEnd - BootLayout.LowRamEnd, E820Type.Reserved),
        };
        ulong lowTop = Math.Min(memBytes, MemoryLayout.MmioGapStart);
        map.Add(new(BootLayout.LegacyAreaEnd, lowTop - BootLayout.LegacyAreaEnd, E820Type.Ram));
        if (memBytes > MemoryLayout.MmioGapStart)
            map.Add(new(MemoryLayout.MmioGapEnd, memBytes - MemoryLayout.MmioGapStart, E820Type.Ram));
        return map;
    }
}
