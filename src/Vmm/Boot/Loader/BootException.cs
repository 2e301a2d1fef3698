namespace FireSharp.Boot;

/// <summary>Why a kernel, initrd or boot-data request was refused. One reason per distinct user-facing fix.</summary>
public enum BootErrorReason
{
    /// <summary>The kernel or initrd file does not exist.</summary>
    FileNotFound,
    /// <summary>The file exists but cannot be opened or read (permissions, I/O error, a directory).</summary>
    FileUnreadable,
    /// <summary>The file ends before a structure it declares (header, program header table, segment, note, setup code).</summary>
    Truncated,
    /// <summary>Neither an ELF (magic 7f 'E' 'L' 'F') nor a bzImage ("HdrS" at 0x202 and 0xAA55 at 0x1fe).</summary>
    NotElfOrBzImage,
    /// <summary>An ELF that is not ELFCLASS64 (for example a 32-bit ELF).</summary>
    WrongElfClass,
    /// <summary>An ELF for a machine other than x86_64 (EM_X86_64 = 62).</summary>
    WrongMachine,
    /// <summary>An ELF whose headers are inconsistent (big-endian, not ET_EXEC, bad entry sizes, p_filesz &gt; p_memsz, bad notes).</summary>
    MalformedElf,
    /// <summary>An ELF with no PT_LOAD segment that has bytes to load.</summary>
    NoLoadableSegment,
    /// <summary>A PT_LOAD segment's physical range [p_paddr, p_paddr+p_memsz) is not inside guest RAM.</summary>
    SegmentOutsideMemory,
    /// <summary>A PT_LOAD segment starts below 1 MiB, where FireSharp keeps its boot data (GDT, zero page, page tables, MP table).</summary>
    SegmentInBootArea,
    /// <summary>The Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) has a bad size or points outside the loaded kernel.</summary>
    BadPvhNote,
    /// <summary>An ELF that is not recognisably a Linux kernel (no 64-bit boot-protocol entry) and has no PVH entry note.</summary>
    NoEntryPoint,
    /// <summary>A bzImage whose boot protocol version is below 2.12.</summary>
    OldBootProtocol,
    /// <summary>A bzImage without XLF_KERNEL_64 in xloadflags: it has no 64-bit entry point.</summary>
    Not64BitCapable,
    /// <summary>A bzImage setup header with impossible values (not loaded high, zero syssize or init_size, short header).</summary>
    MalformedSetupHeader,
    /// <summary>Guest RAM is too small for the kernel, its init_size, or FireSharp's fixed low-memory layout.</summary>
    MemoryTooSmall,
    /// <summary>The command line, with its terminating NUL, exceeds the limit (2048 bytes, or less if the kernel says so).</summary>
    CommandLineTooLong,
    /// <summary>The command line contains a NUL character.</summary>
    CommandLineInvalid,
    /// <summary>No page-aligned place for the initrd in RAM below the kernel's initrd_addr_max that avoids the kernel.</summary>
    InitrdDoesNotFit,
    /// <summary>The initrd file is empty.</summary>
    InitrdEmpty,
    /// <summary>vCPU count outside 1..254 (APIC ids 0..253 plus the IOAPIC id must stay below the broadcast id 255).</summary>
    InvalidVcpuCount,
    /// <summary>A boot-data structure (e820 table, PVH memory map, MP table) does not fit in its fixed area.</summary>
    BootDataDoesNotFit,
    /// <summary>virtio devices were asked for, but the kernel has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES.</summary>
    KernelLacksVirtioMmioCmdline,
}

/// <summary>Which boot input file an error is about.</summary>
public enum BootFile
{
    /// <summary>The kernel image.</summary>
    Kernel,
    /// <summary>The initramfs.</summary>
    Initrd,
}

/// <summary>
/// The one exception type of FireSharp.Boot: a kernel image, initrd or boot-data request that cannot be used.
/// The message is one line naming the file or value; <see cref="Reason"/> and <see cref="File"/> are for code that branches on the cause.
/// Hostile or damaged images always end here, never in an index or range exception.
/// </summary>
public sealed class BootException(BootErrorReason reason, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public BootErrorReason Reason { get; } = reason;

    /// <summary>The file at fault when the error is about reading one (not found, unreadable, truncated, empty); otherwise null.</summary>
    public BootFile? File { get; init; }
}
