using FireSharp.Boot;
using FireSharp.Memory;

namespace FireSharp.Fuzz;

/// <summary>
/// The kernel loaders and the boot data written from what they found, over 32 MiB of guest memory. Each target
/// forces its format's magic numbers into the input so that the fuzzer spends its time past them. A bad image
/// must be refused with a <see cref="BootException"/>.
/// </summary>
public static class BootTargets
{
    private const ulong MemoryBytes = 32 * MemoryLayout.MiB;
    private const ulong InitrdBytes = 64 * 1024;

    /// <summary>The ELF loader: headers, program headers, PT_LOAD segments, notes; then the entry choice for the 64-bit boot protocol.</summary>
    public static void Elf(byte[] input)
    {
        var image = WithElfMagic(input);
        using var memory = GuestMemory.CreateAnonymous(MemoryBytes);
        var kernel = KernelLoader.Load(memory, image);
        BootLoader.ChooseEntry(kernel, preferPvh: false);
    }

    /// <summary>The PVH path: an ELF's Xen PHYS32_ENTRY note, the entry choice preferring it, the initrd placement and the hvm_start_info.</summary>
    public static void Pvh(byte[] input)
    {
        var image = WithElfMagic(input);
        using var memory = GuestMemory.CreateAnonymous(MemoryBytes);
        var kernel = KernelLoader.Load(memory, image);
        var (mode, _) = BootLoader.ChooseEntry(kernel, preferPvh: true);
        var e820 = E820Map.Build(memory.TotalSize);
        ulong initrd = InitrdPlacer.Place(e820, kernel, InitrdBytes);
        if (mode == BootEntryMode.Pvh32)
            PvhStartInfo.Write(memory, BootLayout.PvhStartInfoGpa, BootLayout.CmdlineGpa, initrd, InitrdBytes, e820);
    }

    /// <summary>The bzImage loader: setup header, protocol version, setup sectors, the protected-mode kernel; then boot_params.</summary>
    public static void BzImage(byte[] input)
    {
        var image = new byte[Math.Max(input.Length, 0x206)];
        input.CopyTo(image, 0);
        image[0x1fe] = 0x55;
        image[0x1ff] = 0xaa;
        "HdrS"u8.CopyTo(image.AsSpan(0x202));
        using var memory = GuestMemory.CreateAnonymous(MemoryBytes);
        var kernel = KernelLoader.Load(memory, image);
        var (mode, _) = BootLoader.ChooseEntry(kernel, preferPvh: false);
        var e820 = E820Map.Build(memory.TotalSize);
        ulong initrd = InitrdPlacer.Place(e820, kernel, InitrdBytes);
        int cmdline = Cmdline.Write(memory, BootLayout.CmdlineGpa, "console=ttyS0", kernel.MaxCmdlineBytes);
        if (mode == BootEntryMode.Linux64)
            LinuxBootParams.Write(memory, kernel, BootLayout.CmdlineGpa, cmdline, initrd, InitrdBytes, e820);
    }

    private static byte[] WithElfMagic(byte[] input)
    {
        var image = new byte[Math.Max(input.Length, 4)];
        input.CopyTo(image, 0);
        image[0] = 0x7f;
        "ELF"u8.CopyTo(image.AsSpan(1));
        return image;
    }
}
