using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Fixed guest-physical addresses of FireSharp's x86_64 boot layout (the same map Firecracker uses, see
/// docs/anchors.md). Everything below 1 MiB belongs to the VMM's boot data; kernels load at or above 1 MiB.
/// </summary>
public static class BootLayout
{
    /// <summary>GDT used by the CPU-side entry code (written by the vCPU setup, not by the loader).</summary>
    public const ulong GdtGpa = 0x500;

    /// <summary>IDT (empty) used by the CPU-side entry code.</summary>
    public const ulong IdtGpa = 0x520;

    /// <summary>Xen PVH <c>hvm_start_info</c>; its address goes to RBX/EBX on PVH entry.</summary>
    public const ulong PvhStartInfoGpa = 0x6000;

    /// <summary>Offset of the PVH module list (one <c>hvm_modlist_entry</c> per module) from the start info.</summary>
    public const ulong PvhModlistOffset = 0x40;

    /// <summary>Offset of the PVH memory map (<c>hvm_memmap_table_entry</c> array) from the start info; it runs to the end of that page.</summary>
    public const ulong PvhMemmapOffset = 0x80;

    /// <summary>Linux <c>struct boot_params</c> ("zero page", 4 KiB); its address goes to RSI on 64-bit entry.</summary>
    public const ulong BootParamsGpa = 0x7000;

    /// <summary>Size of <c>struct boot_params</c>.</summary>
    public const int BootParamsSize = 4096;

    /// <summary>Initial stack pointer for the boot vCPU (CPU-side).</summary>
    public const ulong BootStackPointer = 0x8ff0;

    /// <summary>Identity-map page tables for the first 1 GiB with 2 MiB pages (CPU-side): PML4, PDPT, PD.</summary>
    public const ulong Pml4Gpa = 0x9000, PdptGpa = 0xa000, PdGpa = 0xb000;

    /// <summary>Kernel command line, NUL-terminated.</summary>
    public const ulong CmdlineGpa = 0x20000;

    /// <summary>Largest command line including its NUL: x86 Linux's COMMAND_LINE_SIZE.</summary>
    public const int CmdlineMaxBytes = 2048;

    /// <summary>
    /// End of conventional RAM in the e820 map (639 KiB). Linux scans [0x9fc00, 0xa0000) for the MP floating
    /// pointer, which is why the MP table starts here.
    /// </summary>
    public const ulong LowRamEnd = 0x9fc00;

    /// <summary>MP floating pointer followed by the MP configuration table.</summary>
    public const ulong MpTableGpa = 0x9fc00;

    /// <summary>End of the area the MP table may use (Firecracker's MP table / ACPI area ends here).</summary>
    public const ulong MpTableEnd = 0xe0000;

    /// <summary>
    /// End of the reserved legacy area in e820: [LowRamEnd, 1 MiB) is marked reserved as a whole. Firecracker reserves
    /// only [0x9fc00, 0xe0000) and leaves [0xe0000, 1 MiB) out of the map; on a PC that range is the BIOS ROM and is
    /// never RAM, and Linux reserves [0xa0000, 1 MiB) itself anyway, so one reserved entry up to 1 MiB says the same
    /// thing more plainly.
    /// </summary>
    public const ulong LegacyAreaEnd = 0x10_0000;

    /// <summary>Lowest address a kernel segment may occupy (1 MiB): everything below is boot data.</summary>
    public const ulong KernelMinAddress = 0x10_0000;

    /// <summary>Where the protected-mode part of a bzImage is loaded (the boot protocol's default code32_start).</summary>
    public const ulong BzImageLoadAddress = 0x10_0000;

    /// <summary>Offset of the 64-bit entry point (startup_64) from the bzImage load address.</summary>
    public const ulong BzImageEntry64Offset = 0x200;

    /// <summary>initrd_addr_max assumed when the kernel gives none (ELF vmlinux): the protocol's 2 GiB - 1 default.</summary>
    public const uint DefaultInitrdAddrMax = 0x7fff_ffff;

    /// <summary>Smallest guest RAM the layout supports: the low area plus at least 1 MiB above it.</summary>
    public const ulong MinMemoryBytes = 2 * MemoryLayout.MiB;

    /// <summary>Local APIC and IOAPIC MMIO bases advertised in the MP table.</summary>
    public const uint LocalApicAddress = 0xFEE0_0000, IoApicAddress = 0xFEC0_0000;
}
