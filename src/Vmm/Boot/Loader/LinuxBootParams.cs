using System.Buffers.Binary;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Writes Linux's <c>struct boot_params</c> (the "zero page", Documentation/arch/x86/zero-page.rst) for the 64-bit
/// boot protocol. A bzImage's own setup header is copied in; for an ELF vmlinux the loader-relevant header fields
/// are synthesised.
/// </summary>
public static class LinuxBootParams
{
    // boot_params offsets (zero-page.rst).
    public const int ExtRamdiskImage = 0x0c0, ExtRamdiskSize = 0x0c4, ExtCmdLinePtr = 0x0c8;
    public const int E820Entries = 0x1e8, Sentinel = 0x1ef, Hdr = 0x1f1, E820Table = 0x2d0;
    public const int E820EntrySize = 20, E820MaxEntries = 128;

    // setup_header offsets, as boot_params offsets (boot.rst).
    public const int SetupSects = 0x1f1, VidMode = 0x1fa, BootFlag = 0x1fe, Jump = 0x200, Header = 0x202, Version = 0x206;
    public const int TypeOfLoader = 0x210, LoadFlags = 0x211, Code32Start = 0x214, RamdiskImage = 0x218, RamdiskSize = 0x21c;
    public const int HeapEndPtr = 0x224, ExtLoaderVer = 0x226, ExtLoaderType = 0x227, CmdLinePtr = 0x228, InitrdAddrMax = 0x22c;
    public const int KernelAlignment = 0x230, RelocatableKernel = 0x234, XLoadFlags = 0x236, CmdlineSize = 0x238;
    public const int HardwareSubarch = 0x23c, SetupData = 0x250;

    /// <summary>type_of_loader 0xff: "undefined" boot loader (FireSharp has no assigned id).</summary>
    public const byte LoaderUndefined = 0xff;
    public const byte LoadedHigh = 0x01, CanUseHeap = 0x80;
    /// <summary>vid_mode 0xffff: "normal" (80x25 text, no mode switch).</summary>
    public const ushort VidModeNormal = 0xffff;
    /// <summary>
    /// heap_end_ptr: end of the setup heap as an offset from the real-mode code, minus 0x200. Only the 16-bit
    /// entry uses the heap; 0xfe00 is the conventional value for a full 64 KiB real-mode segment.
    /// </summary>
    public const ushort HeapEnd = 0xfe00;
    /// <summary>Version written into a synthesised (ELF) header: 2.12, the first with xloadflags.</summary>
    public const ushort SynthesizedVersion = 0x020c;
    /// <summary>kernel_alignment written into a synthesised header: 16 MiB, x86_64's CONFIG_PHYSICAL_ALIGN default range.</summary>
    public const uint SynthesizedAlignment = 0x100_0000;

    /// <summary>
    /// Writes boot_params at <paramref name="gpa"/> (default 0x7000): the kernel's setup header (or a synthesised one),
    /// type_of_loader = 0xff, loadflags |= LOADED_HIGH | CAN_USE_HEAP, heap_end_ptr, vid_mode = 0xffff,
    /// cmd_line_ptr (+ ext high half), ramdisk image/size (+ ext high halves; 0/0 for none) and the e820 table.
    /// <paramref name="cmdlineLen"/> (bytes without the NUL) is checked against the kernel's limit.
    /// </summary>
    public static void Write(GuestMemory mem, KernelImage k, ulong cmdlineGpa, int cmdlineLen, ulong initrdGpa, ulong initrdSize,
        IReadOnlyList<E820Entry> e820, ulong gpa = BootLayout.BootParamsGpa)
    {
        ArgumentNullException.ThrowIfNull(mem);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(e820);
        if (cmdlineLen < 0 || cmdlineLen + 1 > k.MaxCmdlineBytes)
            throw new BootException(BootErrorReason.CommandLineTooLong,
                $"kernel command line is {cmdlineLen} bytes (+1 NUL); this kernel accepts {k.MaxCmdlineBytes} bytes including the NUL");
        if (e820.Count > E820MaxEntries)
            throw new BootException(BootErrorReason.BootDataDoesNotFit, $"{e820.Count} e820 entries; boot_params holds at most {E820MaxEntries}");

        Span<byte> bp = new byte[BootLayout.BootParamsSize];
        if (k.Format == KernelFormat.BzImage && !k.SetupHeader.IsEmpty)
        {
            k.SetupHeader.Span[..Math.Min(k.SetupHeader.Length, E820Table - Hdr)].CopyTo(bp[Hdr..]);
        }
        else
        {
            W16(bp, BootFlag, 0xAA55);
            W32(bp, Header, 0x5372_6448); // "HdrS"
            W16(bp, Version, SynthesizedVersion);
            W32(bp, KernelAlignment, SynthesizedAlignment);
            W32(bp, InitrdAddrMax, k.InitrdAddrMax);
            W32(bp, CmdlineSize, (uint)k.MaxCmdlineBytes - 1);
            W16(bp, XLoadFlags, 0x1); // XLF_KERNEL_64
            W32(bp, Code32Start, (uint)Math.Min(k.KernelStart, uint.MaxValue));
        }

        bp[TypeOfLoader] = LoaderUndefined;
        bp[ExtLoaderVer] = 0;
        bp[ExtLoaderType] = 0;
        bp[LoadFlags] |= LoadedHigh | CanUseHeap;
        W16(bp, HeapEndPtr, HeapEnd);
        W16(bp, VidMode, VidModeNormal);
        W32(bp, HardwareSubarch, 0); // X86_SUBARCH_PC
        W64(bp, SetupData, 0);        // no setup_data list; never trust one from the image
        bp[Sentinel] = 0;             // non-zero makes the kernel wipe fields it thinks a broken loader left

        W32(bp, CmdLinePtr, (uint)cmdlineGpa);
        W32(bp, ExtCmdLinePtr, (uint)(cmdlineGpa >> 32));
        W32(bp, RamdiskImage, (uint)initrdGpa);
        W32(bp, ExtRamdiskImage, (uint)(initrdGpa >> 32));
        W32(bp, RamdiskSize, (uint)initrdSize);
        W32(bp, ExtRamdiskSize, (uint)(initrdSize >> 32));

        bp[E820Entries] = (byte)e820.Count;
        for (int i = 0; i < e820.Count; i++)
        {
            var e = bp.Slice(E820Table + i * E820EntrySize, E820EntrySize);
            W64(e, 0, e820[i].Address);
            W64(e, 8, e820[i].Size);
            W32(e, 16, (uint)e820[i].Type);
        }

        mem.Write(gpa, bp);
    }

    private static void W16(Span<byte> b, int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(b[o..], v);
    private static void W32(Span<byte> b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b[o..], v);
    private static void W64(Span<byte> b, int o, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b[o..], v);
}
