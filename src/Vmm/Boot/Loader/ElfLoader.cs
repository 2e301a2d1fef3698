using System.Buffers.Binary;
using FireSharp.Memory;

namespace FireSharp.Boot;

/// <summary>
/// Loads an ELF64 x86_64 executable: every PT_LOAD at its p_paddr (bytes beyond p_filesz zeroed), the Xen PVH
/// entry note, and the Linux 64-bit entry. Every offset and size read from the file is checked against the file
/// length and guest RAM before use, and all checks run before the first byte is written to guest memory.
/// </summary>
internal static class ElfLoader
{
    // ELF64 header field offsets (System V gABI).
    private const int EiClass = 4, EiData = 5, EiVersion = 6;
    private const int EType = 0x10, EMachine = 0x12, EEntry = 0x18, EPhoff = 0x20, EShoff = 0x28;
    private const int EPhentsize = 0x36, EPhnum = 0x38, EShentsize = 0x3a, EShnum = 0x3c;
    internal const int EhdrSize = 64, PhdrSize = 56, ShdrSize = 64;

    private const byte ElfClass32 = 1, ElfClass64 = 2, ElfData2Lsb = 1;
    private const ushort EtExec = 2, EmX86_64 = 62, PnXnum = 0xffff;
    internal const uint PtLoad = 1, PtNote = 4, ShtNote = 7;

    /// <summary>Xen's XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical PVH entry point.</summary>
    internal const uint XenElfNotePhys32Entry = 18;

    /// <summary>x86_64 Linux links the kernel at virtual __START_KERNEL_map + physical, so p_vaddr - p_paddr is this.</summary>
    internal const ulong LinuxStartKernelMap = 0xffff_ffff_8000_0000;

    /// <summary>Notes are tiny; a larger note area is a hostile file, not a kernel.</summary>
    private const ulong MaxNoteBytes = 1 << 20;

    private readonly record struct Segment(ulong Offset, ulong VAddr, ulong PAddr, ulong FileSize, ulong MemSize);

    public static bool HasMagic(ReadOnlySpan<byte> head) =>
        head.Length >= 4 && head[0] == 0x7f && head[1] == (byte)'E' && head[2] == (byte)'L' && head[3] == (byte)'F';

    public static KernelImage Load(GuestMemory mem, ImageSource src)
    {
        string name = src.Name;
        if (src.Length < EiVersion + 1)
            throw Fail(BootErrorReason.Truncated, $"{name}: ELF identification truncated ({src.Length} bytes)");
        var ident = src.ReadArray(0, EiVersion + 1);
        if (ident[EiClass] == ElfClass32)
            throw Fail(BootErrorReason.WrongElfClass, $"{name}: 32-bit ELF (ELFCLASS32); a 64-bit x86_64 kernel is required");
        if (ident[EiClass] != ElfClass64)
            throw Fail(BootErrorReason.WrongElfClass, $"{name}: unknown ELF class {ident[EiClass]}; ELFCLASS64 is required");
        if (ident[EiData] != ElfData2Lsb)
            throw Fail(BootErrorReason.MalformedElf, $"{name}: ELF data encoding {ident[EiData]} is not little-endian");
        if (ident[EiVersion] != 1)
            throw Fail(BootErrorReason.MalformedElf, $"{name}: ELF version {ident[EiVersion]} is not 1");
        if (src.Length < EhdrSize)
            throw Fail(BootErrorReason.Truncated, $"{name}: ELF header truncated ({src.Length} of {EhdrSize} bytes)");

        ReadOnlySpan<byte> eh = src.ReadArray(0, EhdrSize);
        ushort machine = U16(eh, EMachine);
        if (machine != EmX86_64)
            throw Fail(BootErrorReason.WrongMachine, $"{name}: ELF machine {machine} is not x86_64 ({EmX86_64})");
        ushort type = U16(eh, EType);
        if (type != EtExec)
            throw Fail(BootErrorReason.MalformedElf, $"{name}: ELF type {type} is not an executable (ET_EXEC)");

        ulong entry = U64(eh, EEntry), phoff = U64(eh, EPhoff), shoff = U64(eh, EShoff);
        ushort phentsize = U16(eh, EPhentsize), phnum = U16(eh, EPhnum);
        ushort shentsize = U16(eh, EShentsize), shnum = U16(eh, EShnum);

        if (phnum == 0)
            throw Fail(BootErrorReason.NoLoadableSegment, $"{name}: ELF has no program headers");
        if (phnum == PnXnum)
            throw Fail(BootErrorReason.MalformedElf, $"{name}: extended program header numbering (PN_XNUM) is not supported");
        if (phentsize != PhdrSize)
            throw Fail(BootErrorReason.MalformedElf, $"{name}: e_phentsize {phentsize} is not {PhdrSize}");
        ulong phBytes = (ulong)phnum * PhdrSize;
        if (!src.Has(phoff, phBytes))
            throw Fail(BootErrorReason.Truncated, $"{name}: program header table [0x{phoff:x}, +{phBytes}) is past the end of the file ({src.Length} bytes)");
        var ph = src.ReadArray((long)phoff, (int)phBytes);

        var loads = new List<Segment>();
        var notes = new List<(ulong Offset, ulong Size, ulong Align, string What)>();
        for (int i = 0; i < phnum; i++)
        {
            ReadOnlySpan<byte> p = ph.AsSpan(i * PhdrSize, PhdrSize);
            uint ptype = U32(p, 0);
            ulong off = U64(p, 8), vaddr = U64(p, 16), paddr = U64(p, 24), filesz = U64(p, 32), memsz = U64(p, 40), align = U64(p, 48);
            if (ptype == PtLoad)
            {
                if (filesz > memsz)
                    throw Fail(BootErrorReason.MalformedElf, $"{name}: segment {i} has p_filesz 0x{filesz:x} larger than p_memsz 0x{memsz:x}");
                if (!src.Has(off, filesz))
                    throw Fail(BootErrorReason.Truncated, $"{name}: segment {i} file bytes [0x{off:x}, +0x{filesz:x}) are past the end of the file ({src.Length} bytes)");
                if (memsz == 0) continue;
                // Below 0xe0000 live the GDT, page tables, zero page, command line and MP table. The rest of the
                // legacy area [0xe0000, 1 MiB) is free (QEMU loads PVH guests there too), so a segment may use it.
                if (paddr < BootLayout.MpTableEnd)
                    throw Fail(BootErrorReason.SegmentInBootArea, $"{name}: segment {i} at physical 0x{paddr:x} overlaps the boot data below 0x{BootLayout.MpTableEnd:x}");
                if (!mem.Contains(paddr, memsz))
                    throw Fail(BootErrorReason.SegmentOutsideMemory, $"{name}: segment {i} [0x{paddr:x}, +0x{memsz:x}) is outside guest RAM ({mem.TotalSize / MemoryLayout.MiB} MiB)");
                loads.Add(new Segment(off, vaddr, paddr, filesz, memsz));
            }
            else if (ptype == PtNote)
            {
                notes.Add((off, filesz, align, $"note segment {i}"));
            }
        }
        if (loads.Count == 0)
            throw Fail(BootErrorReason.NoLoadableSegment, $"{name}: ELF has no PT_LOAD segment with bytes to load");

        if (shnum != 0 && shoff != 0)
        {
            if (shentsize != ShdrSize)
                throw Fail(BootErrorReason.MalformedElf, $"{name}: e_shentsize {shentsize} is not {ShdrSize}");
            ulong shBytes = (ulong)shnum * ShdrSize;
            if (!src.Has(shoff, shBytes))
                throw Fail(BootErrorReason.Truncated, $"{name}: section header table [0x{shoff:x}, +{shBytes}) is past the end of the file ({src.Length} bytes)");
            var sh = src.ReadArray((long)shoff, (int)shBytes);
            for (int i = 0; i < shnum; i++)
            {
                ReadOnlySpan<byte> s = sh.AsSpan(i * ShdrSize, ShdrSize);
                if (U32(s, 4) == ShtNote)
                    notes.Add((U64(s, 0x18), U64(s, 0x20), U64(s, 0x30), $"note section {i}"));
            }
        }

        ulong? pvh = null;
        bool linuxNote = false;
        foreach (var (off, size, align, what) in notes)
        {
            if (!src.Has(off, size))
                throw Fail(BootErrorReason.Truncated, $"{name}: {what} [0x{off:x}, +0x{size:x}) is past the end of the file ({src.Length} bytes)");
            if (size > MaxNoteBytes)
                throw Fail(BootErrorReason.MalformedElf, $"{name}: {what} is {size} bytes, more than the {MaxNoteBytes} allowed");
            ScanNotes(src.ReadArray((long)off, (int)size), align == 8 ? 8 : 4, name, what, ref pvh, ref linuxNote);
        }

        bool isLinux = linuxNote;
        foreach (var s in loads)
            if (s.VAddr - s.PAddr == LinuxStartKernelMap) isLinux = true;

        if (pvh is { } pvhEntry && !loads.Exists(s => pvhEntry >= s.PAddr && pvhEntry - s.PAddr < s.MemSize))
            throw Fail(BootErrorReason.BadPvhNote, $"{name}: PVH entry 0x{pvhEntry:x} is not inside any loaded segment");

        ulong? entry64 = null;
        if (isLinux)
        {
            foreach (var s in loads)
                if (entry >= s.PAddr && entry - s.PAddr < s.MemSize) { entry64 = entry; break; }
            if (entry64 is null)
                foreach (var s in loads)
                    if (entry >= s.VAddr && entry - s.VAddr < s.MemSize) { entry64 = entry - s.VAddr + s.PAddr; break; }
        }

        // All checks passed: now write guest memory.
        ulong start = ulong.MaxValue, end = 0;
        foreach (var s in loads)
        {
            src.CopyToGuest(mem, s.PAddr, (long)s.Offset, s.FileSize);
            GuestFill.Zero(mem, s.PAddr + s.FileSize, s.MemSize - s.FileSize);
            start = Math.Min(start, s.PAddr);
            end = Math.Max(end, s.PAddr + s.MemSize);
        }

        return new KernelImage
        {
            Format = KernelFormat.Elf,
            Entry64 = entry64,
            PvhEntry = pvh,
            ElfEntry = entry,
            KernelStart = start,
            KernelEnd = end,
            IsLinux = isLinux,
        };
    }

    /// <summary>Walks Elf64_Nhdr records (namesz, descsz, type; name and desc padded to <paramref name="align"/>).</summary>
    private static void ScanNotes(ReadOnlySpan<byte> area, int align, string name, string what, ref ulong? pvh, ref bool linux)
    {
        ulong pos = 0, len = (ulong)area.Length;
        while (len - pos >= 12)
        {
            ulong namesz = U32(area, (int)pos), descsz = U32(area, (int)pos + 4);
            uint type = U32(area, (int)pos + 8);
            ulong nameOff = pos + 12;
            ulong descOff = nameOff + AlignUp(namesz, (ulong)align);
            if (namesz > len - nameOff || descOff > len || descsz > len - descOff)
                throw Fail(BootErrorReason.MalformedElf, $"{name}: a note in {what} runs past its end (namesz {namesz}, descsz {descsz})");
            var owner = area.Slice((int)nameOff, (int)namesz).TrimEnd((byte)0);
            var desc = area.Slice((int)descOff, (int)descsz);
            if (owner.SequenceEqual("Xen"u8) && type == XenElfNotePhys32Entry)
            {
                ulong value = descsz switch
                {
                    4 => U32(desc, 0),
                    8 => U64(desc, 0),
                    _ => throw Fail(BootErrorReason.BadPvhNote, $"{name}: PVH entry note has a {descsz}-byte value; 4 or 8 expected"),
                };
                if (value == 0 || value > uint.MaxValue)
                    throw Fail(BootErrorReason.BadPvhNote, $"{name}: PVH entry 0x{value:x} is not a non-zero 32-bit physical address");
                pvh ??= value;
            }
            else if (owner.SequenceEqual("Linux"u8))
            {
                linux = true;
            }
            ulong next = descOff + AlignUp(descsz, (ulong)align);
            if (next >= len) break;
            pos = next;
        }
    }

    private static ulong AlignUp(ulong v, ulong a) => (v + a - 1) & ~(a - 1);
    private static ushort U16(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt16LittleEndian(b[o..]);
    private static uint U32(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32LittleEndian(b[o..]);
    private static ulong U64(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt64LittleEndian(b[o..]);
    private static BootException Fail(BootErrorReason r, string message) => new(r, message);
}
