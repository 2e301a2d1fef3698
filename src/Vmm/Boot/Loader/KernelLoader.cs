using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>Loads a kernel image into guest memory, telling ELF and bzImage apart by their magic numbers.</summary>
public static class KernelLoader
{
    /// <summary>
    /// Reads and loads the kernel at <paramref name="path"/>; a missing file is <see cref="BootErrorReason.FileNotFound"/>.
    /// With <paramref name="scanVirtioMmioCmdline"/>, an ELF kernel is also searched (through the same open file) for
    /// the "virtio_mmio.device" parameter name (<see cref="KernelImage.HasVirtioMmioCmdline"/>).
    /// </summary>
    public static KernelImage Load(GuestMemory mem, string path, bool scanVirtioMmioCmdline = false)
    {
        ArgumentNullException.ThrowIfNull(mem);
        ArgumentNullException.ThrowIfNull(path);
        using var src = ImageSource.OpenFile(path, BootFile.Kernel);
        var kernel = Load(mem, src);
        if (scanVirtioMmioCmdline && kernel.Format == KernelFormat.Elf) kernel.HasVirtioMmioCmdline = src.Contains("virtio_mmio.device\0"u8);
        return kernel;
    }

    /// <summary>Loads a kernel image held in memory (the bytes are copied once).</summary>
    public static KernelImage Load(GuestMemory mem, ReadOnlySpan<byte> image)
    {
        ArgumentNullException.ThrowIfNull(mem);
        using var src = new MemoryImageSource(image.ToArray(), "kernel image");
        return Load(mem, src);
    }

    internal static KernelImage Load(GuestMemory mem, ImageSource src)
    {
        if (src.Length < 4)
            throw new BootException(BootErrorReason.Truncated, $"{src.Name}: {src.Length} bytes is too small to be a kernel");
        var head = src.ReadArray(0, (int)Math.Min(src.Length, 0x206));
        if (ElfLoader.HasMagic(head))
            return ElfLoader.Load(mem, src);
        if (BzImageLoader.HasMagic(head))
            return BzImageLoader.Load(mem, src);
        throw new BootException(BootErrorReason.NotElfOrBzImage,
            $"{src.Name}: not an ELF (no 7f 45 4c 46 magic) and not a bzImage (no \"HdrS\" at 0x202 with 0xAA55 at 0x1fe); {src.Length} bytes");
    }
}
