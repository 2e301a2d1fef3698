namespace FireSharp.Memory;

/// <summary>Fixed facts of the x86_64 guest physical address space FireSharp builds.</summary>
public static class MemoryLayout
{
    public const ulong KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

    /// <summary>Start of the 32-bit MMIO gap (3 GiB). RAM never lives in [MmioGapStart, MmioGapEnd).</summary>
    public const ulong MmioGapStart = 0xC000_0000;

    /// <summary>End of the 32-bit MMIO gap (4 GiB); RAM above the gap resumes here.</summary>
    public const ulong MmioGapEnd = 0x1_0000_0000;

    /// <summary>Page size used for every guest memory mapping.</summary>
    public const ulong PageSize = 4096;

    /// <summary>
    /// Splits a guest RAM size into the physical ranges it occupies: everything below the MMIO gap first,
    /// the remainder from 4 GiB up.
    /// </summary>
    public static IReadOnlyList<(ulong Gpa, ulong Size)> RamRanges(ulong totalBytes)
    {
        if (totalBytes <= MmioGapStart)
            return [(0, totalBytes)];
        return [(0, MmioGapStart), (MmioGapEnd, totalBytes - MmioGapStart)];
    }
}
