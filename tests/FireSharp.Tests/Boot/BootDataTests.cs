using System.Buffers.Binary;
using System.Text;
using FireSharp.Boot;
using FireSharp.Memory;

namespace FireSharp.Tests.Boot;

public sealed class E820MapTests
{
    private const ulong MiB = MemoryLayout.MiB, GiB = MemoryLayout.GiB;

    [Fact]
    public void Map_for_128_MiB()
    {
        Assert.Equal(
        [
            new E820Entry(0, 0x9fc00, E820Type.Ram),
            new E820Entry(0x9fc00, 0x10_0000 - 0x9fc00, E820Type.Reserved),
            new E820Entry(0x10_0000, 128 * MiB - 0x10_0000, E820Type.Ram),
        ], E820Map.Build(128 * MiB));
    }

    [Fact]
    public void Map_for_3_GiB_ends_at_the_mmio_gap()
    {
        var map = E820Map.Build(3 * GiB);
        Assert.Equal(3, map.Count);
        Assert.Equal(new E820Entry(MiB, 3 * GiB - MiB, E820Type.Ram), map[2]);
    }

    [Fact]
    public void Map_for_5_GiB_continues_above_4_GiB()
    {
        var map = E820Map.Build(5 * GiB);
        Assert.Equal(4, map.Count);
        Assert.Equal(new E820Entry(MiB, 3 * GiB - MiB, E820Type.Ram), map[2]);
        Assert.Equal(new E820Entry(4 * GiB, 2 * GiB, E820Type.Ram), map[3]);
        ulong ram = map.Where(e => e.Type == E820Type.Ram).Aggregate(0UL, (a, e) => a + e.Size);
        Assert.Equal(5 * GiB - (MiB - 0x9fc00), ram); // everything but the reserved legacy area
    }

    [Theory]
    [InlineData(128UL << 20)]
    [InlineData(3UL << 30)]
    [InlineData(5UL << 30)]
    public void Every_ram_entry_is_backed_by_guest_memory(ulong size)
    {
        using var mem = GuestMemory.CreateAnonymous(size);
        foreach (var e in E820Map.Build(size))
            Assert.True(mem.Contains(e.Address, e.Size), $"{e} not in guest memory");
    }

    [Fact]
    public void Too_little_memory_is_rejected()
    {
        var e = Assert.Throws<BootException>(() => E820Map.Build(MiB));
        Assert.Equal(BootErrorReason.MemoryTooSmall, e.Reason);
    }
}

public sealed class CmdlineTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(4 * MemoryLayout.MiB);
    public void Dispose() => _mem.Dispose();

    [Fact]
    public void Writes_nul_terminated_bytes()
    {
        _mem.GetSpan(BootLayout.CmdlineGpa, 32).Fill(0xAA);
        int n = Cmdline.Write(_mem, BootLayout.CmdlineGpa, "console=ttyS0 quiet");
        Assert.Equal(19, n);
        Assert.Equal("console=ttyS0 quiet\0", Encoding.ASCII.GetString(_mem.GetSpan(BootLayout.CmdlineGpa, 20)));
    }

    [Fact]
    public void Limit_includes_the_nul()
    {
        Assert.Equal(2047, Cmdline.Write(_mem, BootLayout.CmdlineGpa, new string('a', 2047)));
        var e = Assert.Throws<BootException>(() => Cmdline.Write(_mem, BootLayout.CmdlineGpa, new string('a', 2048)));
        Assert.Equal(BootErrorReason.CommandLineTooLong, e.Reason);
        Assert.Contains("2048", e.Message);
        Assert.Throws<BootException>(() => Cmdline.Encode("abcd", maxBytes: 4));
        Assert.Equal(4, Cmdline.Encode("abcd", maxBytes: 5).Length);
    }

    [Fact]
    public void Multibyte_characters_count_as_bytes()
    {
        var e = Assert.Throws<BootException>(() => Cmdline.Encode(new string('é', 1024)));
        Assert.Equal(BootErrorReason.CommandLineTooLong, e.Reason);
    }

    [Fact]
    public void Embedded_nul_is_rejected()
    {
        var e = Assert.Throws<BootException>(() => Cmdline.Encode("a\0b"));
        Assert.Equal(BootErrorReason.CommandLineInvalid, e.Reason);
    }
}

public sealed class LinuxBootParamsTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(64 * MemoryLayout.MiB);
    public void Dispose() => _mem.Dispose();

    private ushort U16(int off) => _mem.Read<ushort>(BootLayout.BootParamsGpa + (ulong)off);
    private uint U32(int off) => _mem.Read<uint>(BootLayout.BootParamsGpa + (ulong)off);
    private ulong U64(int off) => _mem.Read<ulong>(BootLayout.BootParamsGpa + (ulong)off);
    private byte U8(int off) => _mem.Read<byte>(BootLayout.BootParamsGpa + (ulong)off);

    private static KernelImage ElfKernel => new() { Format = KernelFormat.Elf, Entry64 = 0x100_0000, KernelStart = 0x100_0000, KernelEnd = 0x200_0000, IsLinux = true };

    [Fact]
    public void Elf_kernel_gets_a_synthesised_header_and_all_loader_fields()
    {
        _mem.GetSpan(BootLayout.BootParamsGpa, 4096).Fill(0x5A); // stale data must be cleared
        var e820 = E820Map.Build(64 * MemoryLayout.MiB);
        ulong initrd = 0x1_2345_6000, size = 0x2_0000_1000; // high halves exercise the ext_* fields
        LinuxBootParams.Write(_mem, ElfKernel, 0x20000, 10, initrd, size, e820);

        // Raw offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
        Assert.Equal(0xAA55, U16(0x1fe));                      // boot_flag
        Assert.Equal(0x5372_6448u, U32(0x202));                // "HdrS"
        Assert.Equal(0x020c, U16(0x206));                      // version
        Assert.Equal(0xff, U8(0x210));                         // type_of_loader
        Assert.Equal(0x81, U8(0x211));                         // LOADED_HIGH | CAN_USE_HEAP
        Assert.Equal(0xfe00, U16(0x224));                      // heap_end_ptr
        Assert.Equal(0xffff, U16(0x1fa));                      // vid_mode
        Assert.Equal(0x20000u, U32(0x228));                    // cmd_line_ptr
        Assert.Equal(0u, U32(0x0c8));                          // ext_cmd_line_ptr
        Assert.Equal(0x2345_6000u, U32(0x218));                // ramdisk_image
        Assert.Equal(0x1u, U32(0x0c0));                        // ext_ramdisk_image
        Assert.Equal(0x1000u, U32(0x21c));                     // ramdisk_size
        Assert.Equal(0x2u, U32(0x0c4));                        // ext_ramdisk_size
        Assert.Equal(0x7fff_ffffu, U32(0x22c));                // initrd_addr_max
        Assert.Equal(2047u, U32(0x238));                       // cmdline_size
        Assert.Equal(1, U16(0x236) & 1);                       // XLF_KERNEL_64
        Assert.Equal(0UL, U64(0x250));                         // setup_data
        Assert.Equal(0, U8(0x1ef));                            // sentinel
        Assert.Equal(0u, U32(0x000));                          // screen_info cleared
        Assert.Equal(3, U8(0x1e8));                            // e820_entries
        for (int i = 0; i < e820.Count; i++)
        {
            int o = 0x2d0 + 20 * i;
            Assert.Equal(e820[i].Address, U64(o));
            Assert.Equal(e820[i].Size, U64(o + 8));
            Assert.Equal((uint)e820[i].Type, U32(o + 16));
        }
        Assert.Equal(0UL, U64(0x2d0 + 20 * 3));                // nothing after the last entry
    }

    [Fact]
    public void BzImage_header_is_copied_and_loader_fields_overwritten()
    {
        var img = BzImageBuilder.Build();
        img[0x210] = 0x12; // pretend the image carries a loader id
        BinaryPrimitives.WriteUInt64LittleEndian(img.AsSpan(0x250), 0xdead_beef); // and a hostile setup_data pointer
        var k = KernelLoader.Load(_mem, img);
        LinuxBootParams.Write(_mem, k, 0x20000, 5, 0, 0, E820Map.Build(64 * MemoryLayout.MiB));

        Assert.Equal(0x020f, U16(0x206));                      // the kernel's own version
        Assert.Equal(0x10_0000u, U32(0x260));                  // init_size copied
        Assert.Equal(0x100_0000UL, U64(0x258));                // pref_address copied
        Assert.Equal(4, U8(0x1f1));                            // setup_sects copied
        Assert.Equal(0xff, U8(0x210));
        Assert.Equal(0x81, U8(0x211));
        Assert.Equal(0UL, U64(0x250));
        Assert.Equal(0u, U32(0x218));                          // no initrd
        Assert.Equal(0u, U32(0x21c));
        Assert.Equal(0, U8(0x26c));                            // bytes past the header (0x26c) are not copied
    }

    [Fact]
    public void Command_line_longer_than_the_kernel_accepts_is_rejected()
    {
        var k = KernelLoader.Load(_mem, BzImageBuilder.Build(cmdlineSize: 100));
        var e = Assert.Throws<BootException>(() => LinuxBootParams.Write(_mem, k, 0x20000, 101, 0, 0, E820Map.Build(64 * MemoryLayout.MiB)));
        Assert.Equal(BootErrorReason.CommandLineTooLong, e.Reason);
        LinuxBootParams.Write(_mem, k, 0x20000, 100, 0, 0, E820Map.Build(64 * MemoryLayout.MiB));
    }

    [Fact]
    public void More_than_128_e820_entries_do_not_fit()
    {
        var many = Enumerable.Range(0, 129).Select(i => new E820Entry((ulong)i << 20, 1 << 20, E820Type.Ram)).ToList();
        var e = Assert.Throws<BootException>(() => LinuxBootParams.Write(_mem, ElfKernel, 0x20000, 0, 0, 0, many));
        Assert.Equal(BootErrorReason.BootDataDoesNotFit, e.Reason);
    }
}

public sealed class PvhStartInfoTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(64 * MemoryLayout.MiB);
    public void Dispose() => _mem.Dispose();

    [Fact]
    public void Writes_start_info_v1_with_module_and_memmap()
    {
        var e820 = E820Map.Build(64 * MemoryLayout.MiB);
        PvhStartInfo.Write(_mem, 0x6000, 0x20000, 0x300_0000, 12345, e820);

        Assert.Equal(0x336e_c578u, _mem.Read<uint>(0x6000));  // magic
        Assert.Equal(1u, _mem.Read<uint>(0x6004));             // version
        Assert.Equal(0u, _mem.Read<uint>(0x6008));             // flags
        Assert.Equal(1u, _mem.Read<uint>(0x600c));             // nr_modules
        Assert.Equal(0x6040UL, _mem.Read<ulong>(0x6010));      // modlist_paddr
        Assert.Equal(0x20000UL, _mem.Read<ulong>(0x6018));     // cmdline_paddr
        Assert.Equal(0UL, _mem.Read<ulong>(0x6020));           // rsdp_paddr
        Assert.Equal(0x6080UL, _mem.Read<ulong>(0x6028));      // memmap_paddr
        Assert.Equal(3u, _mem.Read<uint>(0x6030));             // memmap_entries
        Assert.Equal(0x300_0000UL, _mem.Read<ulong>(0x6040));  // module paddr
        Assert.Equal(12345UL, _mem.Read<ulong>(0x6048));       // module size
        for (int i = 0; i < 3; i++)
        {
            ulong o = 0x6080 + 24 * (ulong)i;
            Assert.Equal(e820[i].Address, _mem.Read<ulong>(o));
            Assert.Equal(e820[i].Size, _mem.Read<ulong>(o + 8));
            Assert.Equal((uint)e820[i].Type, _mem.Read<uint>(o + 16));
        }
    }

    [Fact]
    public void No_initrd_means_no_module()
    {
        PvhStartInfo.Write(_mem, 0x6000, 0x20000, null, 0, E820Map.Build(64 * MemoryLayout.MiB));
        Assert.Equal(0u, _mem.Read<uint>(0x600c));
        Assert.Equal(0UL, _mem.Read<ulong>(0x6010));
    }

    [Fact]
    public void Too_many_memmap_entries_do_not_fit()
    {
        var many = Enumerable.Range(0, PvhStartInfo.MaxMemmapEntries + 1).Select(i => new E820Entry((ulong)i << 20, 1 << 20, E820Type.Ram)).ToList();
        var e = Assert.Throws<BootException>(() => PvhStartInfo.Write(_mem, 0x6000, 0x20000, null, 0, many));
        Assert.Equal(BootErrorReason.BootDataDoesNotFit, e.Reason);
    }
}

public sealed class InitrdPlacerTests
{
    private const ulong MiB = MemoryLayout.MiB, GiB = MemoryLayout.GiB;

    private static KernelImage Kernel(ulong start, ulong end, uint initrdMax = 0x7fff_ffff) =>
        new() { Format = KernelFormat.Elf, KernelStart = start, KernelEnd = end, InitrdAddrMax = initrdMax };

    [Fact]
    public void Goes_page_aligned_to_the_top_of_low_ram()
    {
        var e820 = E820Map.Build(128 * MiB);
        ulong size = 10 * MiB + 123;
        ulong at = InitrdPlacer.Place(e820, Kernel(16 * MiB, 20 * MiB), size);
        Assert.Equal(0UL, at % 4096);
        Assert.True(at + size <= 128 * MiB);
        Assert.True(128 * MiB - (at + size) < 4096, "not at the top");
        Assert.Equal((128 * MiB - size) & ~4095UL, at);
    }

    [Fact]
    public void Avoids_a_kernel_at_the_top_of_ram()
    {
        var k = Kernel(100 * MiB, 128 * MiB);
        ulong at = InitrdPlacer.Place(E820Map.Build(128 * MiB), k, 8 * MiB);
        Assert.True(at + 8 * MiB <= k.KernelStart);
        Assert.Equal(92 * MiB, at);
    }

    [Fact]
    public void Respects_initrd_addr_max_and_the_mmio_gap()
    {
        ulong at = InitrdPlacer.Place(E820Map.Build(128 * MiB), Kernel(MiB, 2 * MiB, initrdMax: (uint)(64 * MiB - 1)), MiB);
        Assert.Equal(63 * MiB, at);

        // 5 GiB of RAM, default 2 GiB limit: below 0x80000000, never above 4 GiB.
        at = InitrdPlacer.Place(E820Map.Build(5 * GiB), Kernel(16 * MiB, 32 * MiB), 4 * MiB);
        Assert.Equal(0x8000_0000UL - 4 * MiB, at);

        // An initrd_addr_max of 4 GiB - 1 is still capped by the MMIO gap.
        at = InitrdPlacer.Place(E820Map.Build(5 * GiB), Kernel(16 * MiB, 32 * MiB, initrdMax: 0xffff_ffff), 4 * MiB);
        Assert.Equal(3 * GiB - 4 * MiB, at);
    }

    [Fact]
    public void Too_large_does_not_fit()
    {
        var e = Assert.Throws<BootException>(() => InitrdPlacer.Place(E820Map.Build(64 * MiB), Kernel(16 * MiB, 32 * MiB), 40 * MiB));
        Assert.Equal(BootErrorReason.InitrdDoesNotFit, e.Reason);
        Assert.Contains(((ulong)40 * MiB).ToString(), e.Message);
    }

    [Fact]
    public void Empty_is_rejected()
    {
        var e = Assert.Throws<BootException>(() => InitrdPlacer.Place(E820Map.Build(64 * MiB), Kernel(16 * MiB, 32 * MiB), 0));
        Assert.Equal(BootErrorReason.InitrdEmpty, e.Reason);
    }

    [Fact]
    public void Never_overlaps_the_kernel_or_low_memory()
    {
        var e820 = E820Map.Build(256 * MiB);
        foreach (ulong ks in new[] { 1 * MiB, 16 * MiB, 120 * MiB, 250 * MiB })
            foreach (ulong size in new[] { 4096UL, 3 * MiB + 1, 100 * MiB })
            {
                var k = Kernel(ks, Math.Min(ks + 6 * MiB, 256 * MiB));
                ulong at = InitrdPlacer.Place(e820, k, size);
                Assert.True(at >= MiB && at % 4096 == 0 && at + size <= 256 * MiB);
                Assert.False(at < k.KernelEnd && k.KernelStart < at + size, $"initrd [{at:x}, +{size:x}) overlaps kernel [{k.KernelStart:x}, {k.KernelEnd:x})");
            }
    }
}

public sealed class MpTableTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(4 * MemoryLayout.MiB);
    public void Dispose() => _mem.Dispose();

    private static byte Sum(ReadOnlySpan<byte> b) { byte s = 0; foreach (var x in b) s += x; return s; }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    [InlineData(254)]
    public void Checksums_are_zero_and_entries_match(int vcpus)
    {
        int size = MpTable.Write(_mem, BootLayout.MpTableGpa, vcpus);
        Assert.Equal(MpTable.Size(vcpus), size);

        var fp = _mem.GetSpan(BootLayout.MpTableGpa, 16);
        Assert.True(fp[..4].SequenceEqual("_MP_"u8));
        Assert.Equal(0, Sum(fp));
        Assert.Equal(1, fp[8]);   // length in paragraphs
        Assert.Equal(4, fp[9]);   // spec 1.4
        uint cfg = BinaryPrimitives.ReadUInt32LittleEndian(fp[4..]);
        Assert.Equal(BootLayout.MpTableGpa + 16, cfg);

        var hdr = _mem.GetSpan(cfg, 44);
        Assert.True(hdr[..4].SequenceEqual("PCMP"u8));
        int len = BinaryPrimitives.ReadUInt16LittleEndian(hdr[4..]);
        Assert.Equal(size - 16, len);
        var table = _mem.GetSpan(cfg, len);
        Assert.Equal(0, Sum(table));
        Assert.Equal(BootLayout.LocalApicAddress, BinaryPrimitives.ReadUInt32LittleEndian(hdr[36..]));
        int declared = BinaryPrimitives.ReadUInt16LittleEndian(hdr[34..]);

        // Walk the entries.
        int p = 44, count = 0, cpus = 0, ioIntr = 0;
        var lint = new List<(byte Type, byte Pin)>();
        while (p < len)
        {
            byte type = table[p];
            switch (type)
            {
                case 0:
                    Assert.Equal(cpus, table[p + 1]);                          // APIC id = index
                    Assert.Equal(cpus == 0 ? 3 : 1, table[p + 3]);             // enabled, BSP only on 0
                    cpus++; p += 20; break;
                case 1:
                    Assert.True(table.Slice(p + 2, 6).SequenceEqual("ISA   "u8)); p += 8; break;
                case 2:
                    Assert.Equal(vcpus, table[p + 1]);                         // IOAPIC id
                    Assert.Equal(0x11, table[p + 2]);
                    Assert.Equal(0xFEC0_0000u, BinaryPrimitives.ReadUInt32LittleEndian(table[(p + 4)..]));
                    p += 8; break;
                case 3:
                    Assert.Equal(table[p + 5], table[p + 7]);                  // ISA IRQ n -> pin n
                    Assert.Equal(ioIntr, table[p + 7]);
                    ioIntr++; p += 8; break;
                case 4:
                    lint.Add((table[p + 1], table[p + 7])); p += 8; break;
                default:
                    Assert.Fail($"unknown entry type {type} at {p}"); break;
            }
            count++;
        }
        Assert.Equal(len, p);
        Assert.Equal(declared, count);
        Assert.Equal(vcpus, cpus);
        Assert.Equal(24, ioIntr);
        Assert.Equal([((byte)3, (byte)0), ((byte)1, (byte)1)], lint); // ExtINT on LINT0, NMI on LINT1
        Assert.True(BootLayout.MpTableGpa + (ulong)size <= BootLayout.MpTableEnd);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(255)]
    public void Invalid_vcpu_counts_are_rejected(int vcpus)
    {
        var e = Assert.Throws<BootException>(() => MpTable.Write(_mem, BootLayout.MpTableGpa, vcpus));
        Assert.Equal(BootErrorReason.InvalidVcpuCount, e.Reason);
    }

    [Fact]
    public void Table_that_does_not_fit_its_area_is_rejected()
    {
        var e = Assert.Throws<BootException>(() => MpTable.Write(_mem, BootLayout.MpTableGpa, 8, regionEnd: BootLayout.MpTableGpa + 100));
        Assert.Equal(BootErrorReason.BootDataDoesNotFit, e.Reason);
    }
}
