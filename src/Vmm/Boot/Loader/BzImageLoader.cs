using System.Buffers.Binary;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Loads a Linux bzImage per the x86 boot protocol (Documentation/arch/x86/boot.rst): validates the setup header,
/// loads the protected-mode kernel (file offset (setup_sects+1)*512) at 1 MiB and reports the 64-bit entry at
/// load + 0x200. The real-mode setup code is not loaded; its header is kept for boot_params.
/// </summary>
internal static class BzImageLoader
{
    // Setup header fields, as offsets into the image file (and into boot_params, which embeds the header at 0x1f1).
    internal const int SetupSects = 0x1f1, SysSize = 0x1f4, BootFlag = 0x1fe, JumpOffset = 0x201, HeaderMagic = 0x202;
    internal const int Version = 0x206, LoadFlags = 0x211, InitrdAddrMax = 0x22c, KernelAlignment = 0x230;
    internal const int RelocatableKernel = 0x234, XLoadFlags = 0x236, CmdlineSize = 0x238, PrefAddress = 0x258, InitSize = 0x260;

    /// <summary>The header of every 2.12+ kernel reaches at least to the end of handover_offset.</summary>
    internal const int MinHeaderEnd = 0x268;

    /// <summary>In boot_params the setup header is followed by padding up to edd_mbr_sig_buffer at 0x290.</summary>
    internal const int MaxHeaderEnd = 0x290;

    internal const uint HdrSMagic = 0x5372_6448; // "HdrS"
    internal const ushort BootFlagMagic = 0xAA55;
    internal const ushort MinVersion = 0x020c;
    internal const byte LoadedHigh = 0x01;
    internal const ushort XlfKernel64 = 0x01;

    public static bool HasMagic(ReadOnlySpan<byte> head) =>
        head.Length >= HeaderMagic + 4
        && BinaryPrimitives.ReadUInt32LittleEndian(head[HeaderMagic..]) == HdrSMagic
        && BinaryPrimitives.ReadUInt16LittleEndian(head[BootFlag..]) == BootFlagMagic;

    public static KernelImage Load(GuestMemory mem, ImageSource src)
    {
        string name = src.Name;
        if (src.Length < Version + 2)
            throw new BootException(BootErrorReason.Truncated, $"{name}: bzImage setup header truncated ({src.Length} bytes)");
        var head = src.ReadArray(0, (int)Math.Min(src.Length, MaxHeaderEnd));

        ushort version = U16(head, Version);
        if (version < MinVersion)
            throw new BootException(BootErrorReason.OldBootProtocol,
                $"{name}: boot protocol {version >> 8}.{version & 0xff:d2} is too old; 2.12 or newer is required");
        int headerEnd = Math.Min(HeaderMagic + head[JumpOffset], MaxHeaderEnd);
        if (headerEnd < MinHeaderEnd)
            throw new BootException(BootErrorReason.MalformedSetupHeader, $"{name}: setup header ends at 0x{headerEnd:x}, before init_size/handover_offset (0x{MinHeaderEnd:x})");
        if (head.Length < headerEnd)
            throw new BootException(BootErrorReason.Truncated, $"{name}: setup header truncated ({src.Length} of 0x{headerEnd:x} bytes)");

        if ((U16(head, XLoadFlags) & XlfKernel64) == 0)
            throw new BootException(BootErrorReason.Not64BitCapable, $"{name}: xloadflags 0x{U16(head, XLoadFlags):x} lacks XLF_KERNEL_64; the kernel has no 64-bit entry");
        if ((head[LoadFlags] & LoadedHigh) == 0)
            throw new BootException(BootErrorReason.MalformedSetupHeader, $"{name}: loadflags 0x{head[LoadFlags]:x} lacks LOADED_HIGH; not a bzImage");

        int sects = head[SetupSects] == 0 ? 4 : head[SetupSects];
        long setupBytes = (sects + 1) * 512L;
        ulong sysBytes = U32(head, SysSize) * 16UL;
        if (sysBytes == 0)
            throw new BootException(BootErrorReason.MalformedSetupHeader, $"{name}: syssize is 0");
        if (!src.Has((ulong)setupBytes, sysBytes))
            throw new BootException(BootErrorReason.Truncated,
                $"{name}: file is {src.Length} bytes but the header declares {setupBytes} bytes of setup plus {sysBytes} bytes of kernel");

        uint initSize = U32(head, InitSize);
        ulong pref = U64(head, PrefAddress);
        uint alignment = U32(head, KernelAlignment);
        bool relocatable = head[RelocatableKernel] != 0;
        if (initSize == 0)
            throw new BootException(BootErrorReason.MalformedSetupHeader, $"{name}: init_size is 0");
        if (pref < BootLayout.KernelMinAddress || pref >= MemoryLayout.MmioGapStart)
            throw new BootException(BootErrorReason.MalformedSetupHeader, $"{name}: pref_address 0x{pref:x} is not between 1 MiB and 3 GiB");

        // The decompressor runs the kernel from `runtime`: for a relocatable kernel the load address rounded up to
        // kernel_alignment but never below LOAD_PHYSICAL_ADDR (= pref_address); otherwise pref_address itself. It
        // needs init_size bytes there. The compressed image stays at the load address until it is moved.
        ulong load = BootLayout.BzImageLoadAddress;
        ulong payload = (ulong)src.Length - (ulong)setupBytes;
        ulong runtime = pref;
        if (relocatable && alignment != 0 && (alignment & (alignment - 1)) == 0)
            runtime = Math.Max((load + alignment - 1) & ~((ulong)alignment - 1), pref);
        ulong end = Math.Max(load + payload, runtime + initSize);
        if (!mem.Contains(load, end - load))
            throw new BootException(BootErrorReason.MemoryTooSmall,
                $"{name}: kernel needs guest RAM [0x{load:x}, 0x{end:x}) ({(end + MemoryLayout.MiB - 1) / MemoryLayout.MiB} MiB) but the guest has {mem.TotalSize / MemoryLayout.MiB} MiB");

        src.CopyToGuest(mem, load, setupBytes, payload);

        uint cmdlineSize = U32(head, CmdlineSize);
        uint initrdMax = U32(head, InitrdAddrMax);
        return new KernelImage
        {
            Format = KernelFormat.BzImage,
            Entry64 = load + BootLayout.BzImageEntry64Offset,
            KernelStart = load,
            KernelEnd = end,
            IsLinux = true,
            SetupHeader = head.AsMemory(SetupSects, headerEnd - SetupSects).ToArray(),
            BootProtocolVersion = version,
            InitrdAddrMax = initrdMax != 0 ? initrdMax : BootLayout.DefaultInitrdAddrMax,
            MaxCmdlineBytes = cmdlineSize is > 0 and < BootLayout.CmdlineMaxBytes ? (int)cmdlineSize + 1 : BootLayout.CmdlineMaxBytes,
        };
    }

    private static ushort U16(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b[o..]);
    private static uint U32(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b[o..]);
    private static ulong U64(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b[o..]);
}
