using System.Buffers.Binary;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Writes Xen's <c>hvm_start_info</c> version 1 (xen/include/public/arch-x86/hvm/start_info.h) for a PVH entry:
/// the 56-byte header at gpa, one <c>hvm_modlist_entry</c> (32 bytes) for the initrd at gpa + 0x40, and the
/// memory map (<c>hvm_memmap_table_entry</c>, 24 bytes each) from gpa + 0x80 to the end of that page.
/// </summary>
public static class PvhStartInfo
{
    public const uint Magic = 0x336e_c578; // "xEn3" with the 0x80 bit of the "E" set
    public const uint Version = 1;         // version 1 adds memmap_paddr / memmap_entries

    // hvm_start_info offsets.
    public const int OffMagic = 0, OffVersion = 4, OffFlags = 8, OffNrModules = 12, OffModlistPaddr = 16;
    public const int OffCmdlinePaddr = 24, OffRsdpPaddr = 32, OffMemmapPaddr = 40, OffMemmapEntries = 48;
    public const int HeaderSize = 56, ModlistEntrySize = 32, MemmapEntrySize = 24;

    /// <summary>Memory-map entries that fit between gpa + 0x80 and the end of the 4 KiB page.</summary>
    public const int MaxMemmapEntries = (int)((MemoryLayout.PageSize - BootLayout.PvhMemmapOffset) / MemmapEntrySize);

    /// <summary>
    /// Writes the start info at <paramref name="gpa"/>. <paramref name="initrdGpa"/> null (or a zero size) means no
    /// module. Addresses of 0 mean "not present" in this ABI; rsdp_paddr is 0 (no ACPI).
    /// </summary>
    public static void Write(GuestMemory mem, ulong gpa, ulong cmdlineGpa, ulong? initrdGpa, ulong initrdSize, IReadOnlyList<E820Entry> e820)
    {
        ArgumentNullException.ThrowIfNull(mem);
        ArgumentNullException.ThrowIfNull(e820);
        if (e820.Count > MaxMemmapEntries)
            throw new BootException(BootErrorReason.BootDataDoesNotFit, $"{e820.Count} memory-map entries; the PVH start info page holds at most {MaxMemmapEntries}");

        Span<byte> page = new byte[(int)MemoryLayout.PageSize];
        bool hasModule = initrdGpa is not null && initrdSize != 0;
        ulong modlist = gpa + BootLayout.PvhModlistOffset, memmap = gpa + BootLayout.PvhMemmapOffset;

        W32(page, OffMagic, Magic);
        W32(page, OffVersion, Version);
        W32(page, OffFlags, 0);
        W32(page, OffNrModules, hasModule ? 1u : 0u);
        W64(page, OffModlistPaddr, hasModule ? modlist : 0);
        W64(page, OffCmdlinePaddr, cmdlineGpa);
        W64(page, OffRsdpPaddr, 0);
        W64(page, OffMemmapPaddr, memmap);
        W32(page, OffMemmapEntries, (uint)e820.Count);

        if (hasModule)
        {
            var m = page.Slice((int)BootLayout.PvhModlistOffset, ModlistEntrySize);
            W64(m, 0, initrdGpa!.Value); // paddr
            W64(m, 8, initrdSize);        // size
            W64(m, 16, 0);                // cmdline_paddr: none
        }

        for (int i = 0; i < e820.Count; i++)
        {
            var e = page.Slice((int)BootLayout.PvhMemmapOffset + i * MemmapEntrySize, MemmapEntrySize);
            W64(e, 0, e820[i].Address);
            W64(e, 8, e820[i].Size);
            W32(e, 16, (uint)e820[i].Type);
        }

        mem.Write(gpa, page[..((int)BootLayout.PvhMemmapOffset + e820.Count * MemmapEntrySize)]);
    }

    private static void W32(Span<byte> b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b[o..], v);
    private static void W64(Span<byte> b, int o, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b[o..], v);
}
