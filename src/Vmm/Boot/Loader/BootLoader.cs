using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>How the boot vCPU enters the kernel.</summary>
public enum BootEntryMode
{
    /// <summary>Linux 64-bit boot protocol: long mode, paging on (identity map), RIP = entry, RSI = boot_params.</summary>
    Linux64,
    /// <summary>Xen PVH: 32-bit protected mode, paging off, EIP = PVH entry, EBX = hvm_start_info.</summary>
    Pvh32,
}

/// <summary>What to boot.</summary>
public sealed record BootRequest
{
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string Cmdline { get; init; } = "";
    public int VcpuCount { get; init; } = 1;
    /// <summary>When the ELF kernel has both a PVH note and a 64-bit entry, use PVH.</summary>
    public bool PreferPvh { get; init; }
    /// <summary>Look in an ELF kernel for the virtio_mmio.device parameter (<see cref="KernelImage.HasVirtioMmioCmdline"/>).</summary>
    public bool ScanVirtioMmioCmdline { get; init; }
}

/// <summary>The result of <see cref="BootLoader.Prepare"/>: guest memory is ready; the vCPU setup uses these values.</summary>
public sealed record BootPlan
{
    public required KernelImage Kernel { get; init; }
    public required BootEntryMode Mode { get; init; }
    /// <summary>Guest-physical entry address (RIP for Linux64, EIP for Pvh32).</summary>
    public required ulong EntryRip { get; init; }
    /// <summary>boot_params (0x7000, goes in RSI) for Linux64; hvm_start_info (0x6000, goes in RBX) for Pvh32.</summary>
    public required ulong BootInfoGpa { get; init; }
    public required ulong CmdlineGpa { get; init; }
    /// <summary>Command line length in bytes, without the NUL.</summary>
    public required int CmdlineLength { get; init; }
    /// <summary>Where the initrd was loaded, or null for none.</summary>
    public ulong? InitrdGpa { get; init; }
    public ulong InitrdSize { get; init; }
    public required ulong MpTableGpa { get; init; }
    public required IReadOnlyList<E820Entry> E820 { get; init; }
}

/// <summary>Puts a kernel, initrd and all boot data into guest memory. No KVM calls: the vCPU setup is separate.</summary>
public static class BootLoader
{
    /// <summary>
    /// Loads the kernel and writes the boot data. Entry choice: an ELF with a PVH note and <see cref="BootRequest.PreferPvh"/>
    /// → Pvh32; a bzImage, or an ELF with a known 64-bit entry → Linux64; an ELF with only a PVH note → Pvh32;
    /// anything else → <see cref="BootErrorReason.NoEntryPoint"/>. Always writes the command line (0x20000), the MP
    /// table (0x9fc00) and the memory map; then boot_params (0x7000) for Linux64 or hvm_start_info (0x6000) for Pvh32.
    /// Cheap checks (memory size, vCPU count, command line against 2048) run before the kernel is read.
    /// </summary>
    public static BootPlan Prepare(GuestMemory mem, BootRequest req)
    {
        ArgumentNullException.ThrowIfNull(mem);
        ArgumentNullException.ThrowIfNull(req);

        var e820 = E820Map.Build(mem.TotalSize);
        MpTable.ValidateVcpuCount(req.VcpuCount);
        Cmdline.Encode(req.Cmdline);

        var kernel = KernelLoader.Load(mem, req.KernelPath, req.ScanVirtioMmioCmdline);
        var (mode, entry) = ChooseEntry(kernel, req.PreferPvh, req.KernelPath);

        int cmdlineLen = Cmdline.Write(mem, BootLayout.CmdlineGpa, req.Cmdline, kernel.MaxCmdlineBytes);

        ulong? initrdGpa = null;
        ulong initrdSize = 0;
        if (req.InitrdPath is { } initrdPath)
        {
            using var src = ImageSource.OpenFile(initrdPath, BootFile.Initrd);
            initrdSize = (ulong)src.Length;
            if (initrdSize == 0)
                throw new BootException(BootErrorReason.InitrdEmpty, $"initrd file is empty: {initrdPath}") { File = BootFile.Initrd };
            ulong gpa = InitrdPlacer.Place(e820, kernel, initrdSize);
            src.CopyToGuest(mem, gpa, 0, initrdSize);
            initrdGpa = gpa;
        }

        MpTable.Write(mem, BootLayout.MpTableGpa, req.VcpuCount);

        ulong bootInfo;
        if (mode == BootEntryMode.Linux64)
        {
            LinuxBootParams.Write(mem, kernel, BootLayout.CmdlineGpa, cmdlineLen, initrdGpa ?? 0, initrdSize, e820);
            bootInfo = BootLayout.BootParamsGpa;
        }
        else
        {
            PvhStartInfo.Write(mem, BootLayout.PvhStartInfoGpa, BootLayout.CmdlineGpa, initrdGpa, initrdSize, e820);
            bootInfo = BootLayout.PvhStartInfoGpa;
        }

        return new BootPlan
        {
            Kernel = kernel,
            Mode = mode,
            EntryRip = entry,
            BootInfoGpa = bootInfo,
            CmdlineGpa = BootLayout.CmdlineGpa,
            CmdlineLength = cmdlineLen,
            InitrdGpa = initrdGpa,
            InitrdSize = initrdSize,
            MpTableGpa = BootLayout.MpTableGpa,
            E820 = e820,
        };
    }

    /// <summary>The entry rule of <see cref="Prepare"/>, separately testable.</summary>
    public static (BootEntryMode Mode, ulong Entry) ChooseEntry(KernelImage kernel, bool preferPvh, string name = "kernel")
    {
        ArgumentNullException.ThrowIfNull(kernel);
        if (kernel.PvhEntry is { } pvh && (preferPvh || kernel.Entry64 is null))
            return (BootEntryMode.Pvh32, pvh);
        if (kernel.Entry64 is { } e64)
            return (BootEntryMode.Linux64, e64);
        throw new BootException(BootErrorReason.NoEntryPoint,
            $"{name}: ELF entry 0x{kernel.ElfEntry:x} is not a Linux kernel's 64-bit entry and the image has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    }
}
