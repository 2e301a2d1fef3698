namespace FireSharp.Boot;

public enum KernelFormat
{
    /// <summary>An uncompressed ELF64 x86_64 image (Linux vmlinux, or a small PVH guest).</summary>
    Elf,
    /// <summary>A Linux bzImage (boot protocol 2.12+ with a 64-bit entry).</summary>
    BzImage,
}

/// <summary>What <see cref="KernelLoader"/> put into guest memory and how it can be entered.</summary>
public sealed class KernelImage
{
    public required KernelFormat Format { get; init; }

    /// <summary>
    /// Whether an ELF kernel names the "virtio_mmio.device" parameter (built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES),
    /// read from the file the kernel was loaded from; null when not looked for (a bzImage's payload is compressed).
    /// </summary>
    public bool? HasVirtioMmioCmdline { get; internal set; }

    /// <summary>
    /// Physical address of the Linux 64-bit boot-protocol entry (startup_64), entered in long mode with
    /// RSI = boot_params; null when the image has none (a non-Linux ELF).
    /// ELF: e_entry when it lies in a PT_LOAD's physical range (x86_64 vmlinux links ENTRY(phys_startup_64), which
    /// is already physical); otherwise e_entry - (p_vaddr - p_paddr) of the PT_LOAD whose virtual range holds it.
    /// bzImage: load address + 0x200.
    /// </summary>
    public ulong? Entry64 { get; init; }

    /// <summary>Physical 32-bit PVH entry from the Xen note XEN_ELFNOTE_PHYS32_ENTRY (ELF only), or null.</summary>
    public ulong? PvhEntry { get; init; }

    /// <summary>The raw ELF e_entry (0 for a bzImage). Informational.</summary>
    public ulong ElfEntry { get; init; }

    /// <summary>First guest-physical byte the kernel uses.</summary>
    public required ulong KernelStart { get; init; }

    /// <summary>
    /// One past the last guest-physical byte the kernel uses. ELF: highest p_paddr + p_memsz.
    /// bzImage: the larger of the loaded image's end and the decompression buffer's end (runtime start + init_size).
    /// </summary>
    public required ulong KernelEnd { get; init; }

    /// <summary>True for an image recognised as Linux (bzImage; ELF with a "Linux" note or the __START_KERNEL_map offset).</summary>
    public bool IsLinux { get; init; }

    /// <summary>bzImage only: the setup header bytes, file offsets [0x1f1, 0x202 + byte at 0x201), for boot_params. Empty for ELF.</summary>
    public ReadOnlyMemory<byte> SetupHeader { get; init; }

    /// <summary>bzImage boot protocol version (0x020c = 2.12); 0 for ELF.</summary>
    public ushort BootProtocolVersion { get; init; }

    /// <summary>Highest address any initrd byte may occupy (setup header initrd_addr_max; 0x7fffffff for ELF).</summary>
    public uint InitrdAddrMax { get; init; } = BootLayout.DefaultInitrdAddrMax;

    /// <summary>Largest command line this kernel accepts, including the NUL (min of 2048 and cmdline_size + 1).</summary>
    public int MaxCmdlineBytes { get; init; } = BootLayout.CmdlineMaxBytes;

    public override string ToString() =>
        $"{Format} [0x{KernelStart:x}, 0x{KernelEnd:x}) entry64={Hex(Entry64)} pvh={Hex(PvhEntry)}";

    private static string Hex(ulong? v) => v is { } x ? $"0x{x:x}" : "none";
}
