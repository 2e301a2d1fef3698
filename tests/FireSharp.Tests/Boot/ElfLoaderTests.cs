using CsCheck;
using FireSharp.Boot;
using FireSharp.Memory;

namespace FireSharp.Tests.Boot;

public sealed class ElfLoaderTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(32 * MemoryLayout.MiB);

    public void Dispose() => _mem.Dispose();

    private static BootException Rejects(GuestMemory mem, byte[] image, BootErrorReason reason)
    {
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(mem, image));
        Assert.Equal(reason, e.Reason);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void Loads_segments_at_paddr_and_zeroes_bss()
    {
        var data = Enumerable.Range(0, 1000).Select(i => (byte)(i % 251 + 1)).ToArray();
        var data2 = new byte[] { 9, 8, 7 };
        var elf = new ElfBuilder { Entry = 0x20_0000 }
            .Load(0x20_0000, data, memSize: 0x2000)
            .Load(0x40_0000, data2)
            .PvhNote32(0x20_0000)
            .Build();
        // Dirty the bss and the byte after it so the test sees what the loader zeroed and what it left alone.
        _mem.GetSpan(0x20_0000, 0x2001).Fill(0xCC);

        var k = KernelLoader.Load(_mem, elf);

        Assert.Equal(KernelFormat.Elf, k.Format);
        Assert.True(_mem.GetSpan(0x20_0000, data.Length).SequenceEqual(data));
        Assert.All(_mem.GetSpan(0x20_0000 + (ulong)data.Length, 0x2000 - data.Length).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(0xCC, _mem.Read<byte>(0x20_2000));
        Assert.True(_mem.GetSpan(0x40_0000, 3).SequenceEqual(data2));
        Assert.Equal(0x20_0000UL, k.KernelStart);
        Assert.Equal(0x40_0003UL, k.KernelEnd);
        Assert.Equal(0x20_0000UL, k.ElfEntry);
    }

    [Theory]
    [InlineData(4, true, true)]
    [InlineData(8, true, true)]
    [InlineData(4, true, false)]
    [InlineData(8, false, true)]
    public void Finds_pvh_note_of_either_width_in_segment_or_section(int width, bool inSegment, bool inSection)
    {
        var b = new ElfBuilder { Entry = 0x10_0000, NotesInSegment = inSegment, NotesInSection = inSection }
            .Load(0x10_0000, new byte[64]);
        b.Note("GNU", 3, new byte[20]); // an unrelated note first
        if (width == 4) b.PvhNote32(0x10_0010); else b.PvhNote64(0x10_0010);

        var k = KernelLoader.Load(_mem, b.Build());

        Assert.Equal(0x10_0010UL, k.PvhEntry);
        Assert.Null(k.Entry64); // not a Linux image
        Assert.False(k.IsLinux);
        Assert.Equal((BootEntryMode.Pvh32, 0x10_0010UL), BootLoader.ChooseEntry(k, preferPvh: false));
    }

    [Fact]
    public void Linux_vmlinux_entry_is_physical_e_entry()
    {
        var k = KernelLoader.Load(_mem, ElfBuilder.Vmlinux().Build());
        Assert.True(k.IsLinux);
        Assert.Equal(0x100_0000UL, k.Entry64);
        Assert.Equal(0x100_0040UL, k.PvhEntry);
        Assert.Equal((BootEntryMode.Linux64, 0x100_0000UL), BootLoader.ChooseEntry(k, preferPvh: false));
        Assert.Equal((BootEntryMode.Pvh32, 0x100_0040UL), BootLoader.ChooseEntry(k, preferPvh: true));
    }

    [Fact]
    public void Virtual_e_entry_is_translated_through_its_segment()
    {
        var b = ElfBuilder.Vmlinux(pvhWidth: 0);
        b.Entry = 0x100_0000 + ElfBuilder.LinuxMap + 0x20; // startup_64's virtual address
        var k = KernelLoader.Load(_mem, b.Build());
        Assert.Equal(0x100_0020UL, k.Entry64);
        Assert.Null(k.PvhEntry);
    }

    [Fact]
    public void Linux_note_alone_marks_a_linux_kernel()
    {
        var elf = new ElfBuilder { Entry = 0x10_0000 }.Load(0x10_0000, new byte[32]).Note("Linux", 1, [0, 0, 0, 0]).Build();
        Assert.Equal(0x10_0000UL, KernelLoader.Load(_mem, elf).Entry64);
    }

    [Fact]
    public void Non_linux_elf_without_pvh_note_has_no_entry()
    {
        var k = KernelLoader.Load(_mem, new ElfBuilder { Entry = 0x10_0000 }.Load(0x10_0000, new byte[32]).Build());
        Assert.Null(k.Entry64);
        Assert.Null(k.PvhEntry);
        var e = Assert.Throws<BootException>(() => BootLoader.ChooseEntry(k, preferPvh: true));
        Assert.Equal(BootErrorReason.NoEntryPoint, e.Reason);
    }

    [Fact]
    public void Elf32_is_rejected() =>
        Rejects(_mem, new ElfBuilder { Class = 1 }.Load(0x10_0000, new byte[16]).Build(), BootErrorReason.WrongElfClass);

    [Fact]
    public void Other_machine_is_rejected()
    {
        var e = Rejects(_mem, new ElfBuilder { Machine = 183 }.Load(0x10_0000, new byte[16]).Build(), BootErrorReason.WrongMachine);
        Assert.Contains("183", e.Message);
    }

    [Fact]
    public void Big_endian_and_non_executable_are_malformed()
    {
        Rejects(_mem, new ElfBuilder { Data = 2 }.Load(0x10_0000, new byte[16]).Build(), BootErrorReason.MalformedElf);
        Rejects(_mem, new ElfBuilder { Type = 3 }.Load(0x10_0000, new byte[16]).Build(), BootErrorReason.MalformedElf);
    }

    [Fact]
    public void Segment_outside_memory_is_rejected_and_memory_is_untouched()
    {
        var elf = new ElfBuilder().Load(0x10_0000, [1, 2, 3]).Load(32 * MemoryLayout.MiB - 8, new byte[16]).Build();
        var e = Rejects(_mem, elf, BootErrorReason.SegmentOutsideMemory);
        Assert.Contains("0x1fffff8", e.Message);
        Assert.Equal(0, _mem.Read<byte>(0x10_0000)); // validation happens before any write
    }

    [Fact]
    public void Segment_straddling_the_mmio_gap_is_rejected()
    {
        using var big = GuestMemory.CreateAnonymous(4 * MemoryLayout.GiB);
        var elf = new ElfBuilder().Load(MemoryLayout.MmioGapStart - 0x1000, new byte[16], memSize: 0x2000).Build();
        Rejects(big, elf, BootErrorReason.SegmentOutsideMemory);
    }

    [Fact]
    public void Segment_below_one_mib_is_rejected() =>
        Rejects(_mem, new ElfBuilder().Load(0x7000, new byte[16]).Build(), BootErrorReason.SegmentInBootArea);

    [Fact]
    public void Filesz_larger_than_memsz_is_rejected() =>
        Rejects(_mem, new ElfBuilder().Load(0x10_0000, new byte[64], memSize: 32).Build(), BootErrorReason.MalformedElf);

    [Fact]
    public void No_load_segment_is_rejected() =>
        Rejects(_mem, new ElfBuilder().PvhNote32(0x10_0000).Build(), BootErrorReason.NoLoadableSegment);

    [Fact]
    public void Bad_pvh_notes_are_rejected()
    {
        Rejects(_mem, new ElfBuilder().Load(0x10_0000, new byte[16]).Note("Xen", 18, [1, 2]).Build(), BootErrorReason.BadPvhNote);
        Rejects(_mem, new ElfBuilder().Load(0x10_0000, new byte[16]).PvhNote64(0x1_0000_0000).Build(), BootErrorReason.BadPvhNote);
        Rejects(_mem, new ElfBuilder().Load(0x10_0000, new byte[16]).PvhNote32(0x30_0000).Build(), BootErrorReason.BadPvhNote);
    }

    [Fact]
    public void Missing_file_is_file_not_found()
    {
        var path = Path.Combine(Path.GetTempPath(), "firesharp-no-such-kernel-" + Guid.NewGuid());
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(_mem, path));
        Assert.Equal(BootErrorReason.FileNotFound, e.Reason);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Directory_is_unreadable()
    {
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(_mem, Path.GetTempPath()));
        Assert.Equal(BootErrorReason.FileUnreadable, e.Reason);
    }

    [Fact]
    public void Loads_the_same_from_a_file()
    {
        var elf = ElfBuilder.Vmlinux().Build();
        var path = Path.Combine(Path.GetTempPath(), "firesharp-elf-" + Guid.NewGuid());
        File.WriteAllBytes(path, elf);
        try
        {
            var k = KernelLoader.Load(_mem, path);
            Assert.Equal(0x100_0040UL, k.PvhEntry);
            Assert.Equal(1, _mem.Read<byte>(0x100_0000)); // first text byte of Vmlinux() is 1
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Every_prefix_of_a_valid_elf_is_rejected_with_boot_exception()
    {
        foreach (var elf in new[] { ElfBuilder.Vmlinux().Build(), new ElfBuilder().Load(0x10_0000, new byte[40]).Build() })
        {
            KernelLoader.Load(_mem, elf); // the whole image is valid
            for (int len = 0; len < elf.Length; len++)
            {
                var ex = Record.Exception(() => KernelLoader.Load(_mem, elf.AsSpan(0, len)));
                Assert.True(ex is BootException, $"prefix of {len}/{elf.Length} bytes gave {ex?.GetType().Name ?? "success"}: {ex?.Message}");
            }
        }
    }

    [Fact]
    public void Random_truncation_gives_boot_exception()
    {
        var elf = ElfBuilder.Vmlinux().Build();
        Gen.Int[0, elf.Length - 1].Sample(len =>
        {
            var ex = Record.Exception(() => KernelLoader.Load(_mem, elf.AsSpan(0, len)));
            Assert.IsType<BootException>(ex, exactMatch: true);
        }, iter: 500);
    }

    [Fact]
    public void Random_corruption_and_truncation_give_success_or_boot_exception()
    {
        var elf = ElfBuilder.Vmlinux().Build();
        var gen = Gen.Select(Gen.Int[0, elf.Length], Gen.Select(Gen.Int[0, elf.Length - 1], Gen.Byte).Array[1, 8]);
        gen.Sample(t =>
        {
            var (len, edits) = t;
            var img = elf.ToArray();
            foreach (var (pos, value) in edits) img[pos] = value;
            var ex = Record.Exception(() => KernelLoader.Load(_mem, img.AsSpan(0, len)));
            Assert.True(ex is null or BootException, $"{ex?.GetType().Name}: {ex?.Message}");
        }, iter: 3000);
    }

    [Fact]
    public void Corrupted_header_fields_give_boot_exception()
    {
        // Hit every byte of the ELF header and program headers with extreme values.
        var elf = ElfBuilder.Vmlinux().Build();
        int headers = 64 + 2 * 56;
        foreach (byte v in new byte[] { 0x00, 0x01, 0x7f, 0x80, 0xff })
            for (int i = 0; i < headers; i++)
            {
                var img = elf.ToArray();
                img[i] = v;
                var ex = Record.Exception(() => KernelLoader.Load(_mem, img));
                Assert.True(ex is null or BootException, $"byte {i} = 0x{v:x2}: {ex?.GetType().Name}: {ex?.Message}");
            }
    }
}
