using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace FireSharp.Tests.Boot;

/// <summary>Builds small ELF64 images for the loader tests: PT_LOAD segments, notes in a PT_NOTE and/or SHT_NOTE.</summary>
internal sealed class ElfBuilder
{
    public const ulong LinuxMap = 0xffff_ffff_8000_0000;

    public byte Class { get; set; } = 2;
    public byte Data { get; set; } = 1;
    public ushort Type { get; set; } = 2;
    public ushort Machine { get; set; } = 62;
    public ulong Entry { get; set; }
    public bool NotesInSegment { get; set; } = true;
    public bool NotesInSection { get; set; } = true;

    public List<(ulong PAddr, ulong VAddr, byte[] Data, ulong MemSize)> Loads { get; } = [];
    public List<(string Owner, uint Type, byte[] Desc)> Notes { get; } = [];

    public ElfBuilder Load(ulong paddr, byte[] data, ulong? memSize = null, ulong? vaddr = null)
    {
        Loads.Add((paddr, vaddr ?? paddr, data, memSize ?? (ulong)data.Length));
        return this;
    }

    public ElfBuilder Note(string owner, uint type, byte[] desc)
    {
        Notes.Add((owner, type, desc));
        return this;
    }

    public ElfBuilder PvhNote32(uint entry) => Note("Xen", 18, BitConverter.GetBytes(entry));
    public ElfBuilder PvhNote64(ulong entry) => Note("Xen", 18, BitConverter.GetBytes(entry));

    public static byte[] EncodeNotes(IEnumerable<(string Owner, uint Type, byte[] Desc)> notes)
    {
        var ms = new MemoryStream();
        Span<byte> h = stackalloc byte[12];
        foreach (var (owner, type, desc) in notes)
        {
            var name = Encoding.ASCII.GetBytes(owner + "\0");
            BinaryPrimitives.WriteUInt32LittleEndian(h, (uint)name.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(h[4..], (uint)desc.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(h[8..], type);
            ms.Write(h);
            ms.Write(name); Pad(ms, 4);
            ms.Write(desc); Pad(ms, 4);
        }
        return ms.ToArray();
    }

    private static void Pad(MemoryStream ms, int a) { while (ms.Length % a != 0) ms.WriteByte(0); }

    /// <summary>Layout: ELF header, program headers, note bytes, segment bytes, then the section header table last.</summary>
    public byte[] Build()
    {
        var notes = EncodeNotes(Notes);
        bool noteSeg = NotesInSegment && notes.Length > 0, noteSec = NotesInSection && notes.Length > 0;
        int phnum = Loads.Count + (noteSeg ? 1 : 0);
        int pos = 64 + phnum * 56;
        int notesOff = pos;
        pos += notes.Length;
        var segOffs = new List<int>();
        foreach (var l in Loads) { pos = (pos + 15) & ~15; segOffs.Add(pos); pos += l.Data.Length; }
        int shnum = noteSec ? 2 : 0;
        pos = (pos + 7) & ~7;
        int shoff = noteSec ? pos : 0;
        pos += shnum * 64;

        var f = new byte[pos];
        var s = f.AsSpan();
        s[0] = 0x7f; s[1] = (byte)'E'; s[2] = (byte)'L'; s[3] = (byte)'F';
        s[4] = Class; s[5] = Data; s[6] = 1;
        W16(s, 0x10, Type); W16(s, 0x12, Machine); W32(s, 0x14, 1);
        W64(s, 0x18, Entry); W64(s, 0x20, 64); W64(s, 0x28, (ulong)shoff);
        W16(s, 0x34, 64); W16(s, 0x36, 56); W16(s, 0x38, (ushort)phnum);
        W16(s, 0x3a, 64); W16(s, 0x3c, (ushort)shnum); W16(s, 0x3e, 0);

        int ph = 64;
        for (int i = 0; i < Loads.Count; i++, ph += 56)
        {
            var l = Loads[i];
            W32(s, ph, 1); W32(s, ph + 4, 7);
            W64(s, ph + 8, (ulong)segOffs[i]); W64(s, ph + 16, l.VAddr); W64(s, ph + 24, l.PAddr);
            W64(s, ph + 32, (ulong)l.Data.Length); W64(s, ph + 40, l.MemSize); W64(s, ph + 48, 16);
            l.Data.CopyTo(s[segOffs[i]..]);
        }
        if (noteSeg)
        {
            W32(s, ph, 4); W32(s, ph + 4, 4);
            W64(s, ph + 8, (ulong)notesOff); W64(s, ph + 32, (ulong)notes.Length); W64(s, ph + 40, (ulong)notes.Length); W64(s, ph + 48, 4);
        }
        notes.CopyTo(s[notesOff..]);
        if (noteSec)
        {
            int sh = shoff + 64; // section 0 is the null section
            W32(s, sh + 4, 7); W64(s, sh + 0x18, (ulong)notesOff); W64(s, sh + 0x20, (ulong)notes.Length); W64(s, sh + 0x30, 4);
        }
        return f;
    }

    /// <summary>A small Linux-like vmlinux: text at 16 MiB linked at __START_KERNEL_map, bss, PVH note, "Linux" note.</summary>
    public static ElfBuilder Vmlinux(int pvhWidth = 8)
    {
        var b = new ElfBuilder { Entry = 0x100_0000 };
        var text = Enumerable.Range(0, 300).Select(i => (byte)(i * 7 + 1)).ToArray();
        b.Load(0x100_0000, text, memSize: 0x3000, vaddr: 0x100_0000 + LinuxMap);
        b.Note("Linux", 0x100, [1, 2, 3, 4]);
        if (pvhWidth == 8) b.PvhNote64(0x100_0040); else if (pvhWidth == 4) b.PvhNote32(0x100_0040);
        return b;
    }

    internal static void W16(Span<byte> b, int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(b[o..], v);
    internal static void W32(Span<byte> b, int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(b[o..], v);
    internal static void W64(Span<byte> b, int o, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(b[o..], v);
}

/// <summary>Builds a synthetic bzImage: 4 setup sectors + boot sector, a 2.15 setup header, and a payload.</summary>
internal static class BzImageBuilder
{
    public const int SetupBytes = 5 * 512;

    public static byte[] Build(int payloadBytes = 4096, ushort version = 0x020f, ushort xloadflags = 0x3, uint initSize = 0x10_0000,
        ulong prefAddress = 0x100_0000, uint cmdlineSize = 2047, uint initrdAddrMax = 0x7fff_ffff)
    {
        var f = new byte[SetupBytes + payloadBytes];
        var s = f.AsSpan();
        s[0x1f1] = 4;                               // setup_sects
        ElfBuilder.W32(s, 0x1f4, (uint)(payloadBytes / 16)); // syssize
        ElfBuilder.W16(s, 0x1fe, 0xAA55);
        s[0x200] = 0xeb; s[0x201] = 0x6a;           // jmp to 0x26c: header ends there
        "HdrS"u8.CopyTo(s[0x202..]);
        ElfBuilder.W16(s, 0x206, version);
        s[0x211] = 0x01;                            // LOADED_HIGH
        ElfBuilder.W32(s, 0x214, 0x10_0000);        // code32_start
        ElfBuilder.W32(s, 0x22c, initrdAddrMax);
        ElfBuilder.W32(s, 0x230, 0x20_0000);        // kernel_alignment
        s[0x234] = 1;                               // relocatable
        ElfBuilder.W16(s, 0x236, xloadflags);
        ElfBuilder.W32(s, 0x238, cmdlineSize);
        ElfBuilder.W64(s, 0x258, prefAddress);
        ElfBuilder.W32(s, 0x260, initSize);
        for (int i = 0; i < payloadBytes; i++) f[SetupBytes + i] = (byte)(i * 13 + 5);
        return f;
    }
}

internal static class RepoFiles
{
    /// <summary>Repository root, found from this source file's location (tests may run from any artifacts path).</summary>
    public static string Root([CallerFilePath] string here = "")
    {
        var dir = Path.GetDirectoryName(here);
        while (dir is not null && !File.Exists(Path.Combine(dir, "FireSharp.sln")) && !Directory.Exists(Path.Combine(dir, ".git")))
            dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException("repository root not found from " + here);
    }
}
