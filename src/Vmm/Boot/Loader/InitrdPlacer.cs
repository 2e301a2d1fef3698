using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>Chooses where the initrd goes: page-aligned, as high as possible in RAM below the MMIO gap.</summary>
public static class InitrdPlacer
{
    /// <summary>
    /// Returns the guest-physical address for an initrd of <paramref name="initrdSize"/> bytes: the highest
    /// page-aligned address such that the whole initrd lies in one RAM entry of <paramref name="e820"/> at or above
    /// 1 MiB, below the 3 GiB MMIO gap, with its last byte at or below the kernel's initrd_addr_max, and outside
    /// [KernelStart, KernelEnd). In practice that is the top of the RAM region that starts at 1 MiB.
    /// </summary>
    public static ulong Place(IReadOnlyList<E820Entry> e820, KernelImage kernel, ulong initrdSize)
    {
        ArgumentNullException.ThrowIfNull(e820);
        ArgumentNullException.ThrowIfNull(kernel);
        if (initrdSize == 0)
            throw new BootException(BootErrorReason.InitrdEmpty, "initrd is empty (0 bytes)");

        ulong limit = Math.Min((ulong)kernel.InitrdAddrMax + 1, MemoryLayout.MmioGapStart);
        ulong? best = null;
        foreach (var e in e820)
        {
            if (e.Type != E820Type.Ram) continue;
            ulong lo = Math.Max(e.Address, BootLayout.KernelMinAddress);
            ulong hi = Math.Min(e.End, limit);
            if (Fit(lo, hi, initrdSize) is not { } at) continue;
            if (Overlaps(at, initrdSize, kernel))
            {
                // Try directly below the kernel instead.
                if (Fit(lo, Math.Min(hi, kernel.KernelStart), initrdSize) is not { } below) continue;
                at = below;
            }
            if (best is null || at > best) best = at;
        }
        return best ?? throw new BootException(BootErrorReason.InitrdDoesNotFit,
            $"initrd of {initrdSize} bytes ({(initrdSize + MemoryLayout.MiB - 1) / MemoryLayout.MiB} MiB) does not fit in guest RAM below 0x{limit:x} " +
            $"outside the kernel [0x{kernel.KernelStart:x}, 0x{kernel.KernelEnd:x})");
    }

    /// <summary>Highest page-aligned start in [lo, hi) that holds <paramref name="size"/> bytes, or null.</summary>
    private static ulong? Fit(ulong lo, ulong hi, ulong size)
    {
        if (hi <= lo || hi - lo < size) return null;
        ulong at = (hi - size) & ~(MemoryLayout.PageSize - 1);
        return at >= lo ? at : null;
    }

    private static bool Overlaps(ulong at, ulong size, KernelImage k) => at < k.KernelEnd && k.KernelStart < at + size;
}
