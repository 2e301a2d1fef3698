using System.Text;
using FireSharp.Boot;
using FireSharp.Memory;

namespace FireSharp.Tests.Boot;

public sealed class BootLoaderTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(128 * MemoryLayout.MiB);
    private readonly string _dir = Directory.CreateTempSubdirectory("firesharp-boot-").FullName;

    public void Dispose()
    {
        _mem.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private string File(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    private byte[] Initrd { get; } = Enumerable.Range(0, 3 * 4096 + 17).Select(i => (byte)(i * 31 + 3)).ToArray();

    [Fact]
    public void Linux_elf_boots_through_the_64_bit_protocol_by_default()
    {
        var plan = BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("vmlinux", ElfBuilder.Vmlinux().Build()),
            InitrdPath = File("initrd", Initrd),
            Cmdline = "console=ttyS0 panic=1",
            VcpuCount = 2,
        });

        Assert.Equal(BootEntryMode.Linux64, plan.Mode);
        Assert.Equal(0x100_0000UL, plan.EntryRip);
        Assert.Equal(BootLayout.BootParamsGpa, plan.BootInfoGpa);
        Assert.Equal(21, plan.CmdlineLength);
        Assert.Equal("console=ttyS0 panic=1\0", Encoding.ASCII.GetString(_mem.GetSpan(0x20000, 22)));

        Assert.NotNull(plan.InitrdGpa);
        ulong initrd = plan.InitrdGpa.Value;
        Assert.Equal((ulong)Initrd.Length, plan.InitrdSize);
        Assert.True(_mem.GetSpan(initrd, Initrd.Length).SequenceEqual(Initrd));
        Assert.Equal(0UL, initrd % 4096);
        Assert.True(initrd >= plan.Kernel.KernelEnd);

        // boot_params points at the same things.
        Assert.Equal(0x20000u, _mem.Read<uint>(0x7000 + 0x228));
        Assert.Equal((uint)initrd, _mem.Read<uint>(0x7000 + 0x218));
        Assert.Equal((uint)Initrd.Length, _mem.Read<uint>(0x7000 + 0x21c));
        Assert.Equal(3, _mem.Read<byte>(0x7000 + 0x1e8));
        // MP table present with 2 CPUs; no PVH start info.
        Assert.True(_mem.GetSpan(BootLayout.MpTableGpa, 4).SequenceEqual("_MP_"u8));
        Assert.Equal(0u, _mem.Read<uint>(0x6000));
        Assert.Equal(plan.E820, E820Map.Build(128 * MemoryLayout.MiB));
    }

    [Fact]
    public void Prefer_pvh_uses_the_pvh_note_and_start_info()
    {
        var plan = BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("vmlinux", ElfBuilder.Vmlinux().Build()),
            InitrdPath = File("initrd", Initrd),
            Cmdline = "quiet",
            PreferPvh = true,
        });

        Assert.Equal(BootEntryMode.Pvh32, plan.Mode);
        Assert.Equal(0x100_0040UL, plan.EntryRip);
        Assert.Equal(BootLayout.PvhStartInfoGpa, plan.BootInfoGpa);
        Assert.Equal(PvhStartInfo.Magic, _mem.Read<uint>(0x6000));
        Assert.Equal(1u, _mem.Read<uint>(0x600c));
        Assert.Equal(plan.InitrdGpa, _mem.Read<ulong>(0x6040));
        Assert.Equal(0x20000UL, _mem.Read<ulong>(0x6018));
        Assert.Equal(0u, _mem.Read<uint>(0x7000 + 0x202)); // no boot_params
    }

    [Fact]
    public void Tiny_pvh_elf_boots_pvh_even_without_preference()
    {
        var elf = new ElfBuilder { Entry = 0x10_0000 }.Load(0x10_0000, [0xf4]).PvhNote32(0x10_0000).Build();
        var plan = BootLoader.Prepare(_mem, new BootRequest { KernelPath = File("tiny.elf", elf) });
        Assert.Equal(BootEntryMode.Pvh32, plan.Mode);
        Assert.Equal(0x10_0000UL, plan.EntryRip);
        Assert.Null(plan.InitrdGpa);
        Assert.Equal(0u, _mem.Read<uint>(0x600c)); // no module
    }

    [Fact]
    public void BzImage_boots_linux64_at_load_plus_0x200()
    {
        var plan = BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("bzImage", BzImageBuilder.Build()),
            InitrdPath = File("initrd", Initrd),
            PreferPvh = true,
        });
        Assert.Equal(BootEntryMode.Linux64, plan.Mode);
        Assert.Equal(0x10_0200UL, plan.EntryRip);
        Assert.Equal(0x020f, _mem.Read<ushort>(0x7000 + 0x206));
        Assert.True(plan.InitrdGpa >= plan.Kernel.KernelEnd);
    }

    [Fact]
    public void Elf_without_any_entry_is_rejected()
    {
        var elf = new ElfBuilder { Entry = 0x10_0000 }.Load(0x10_0000, [0xf4]).Build();
        var e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest { KernelPath = File("plain.elf", elf) }));
        Assert.Equal(BootErrorReason.NoEntryPoint, e.Reason);
        Assert.Contains("plain.elf", e.Message);
    }

    [Fact]
    public void Missing_files_are_file_not_found()
    {
        var missing = Path.Combine(_dir, "nope");
        var e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest { KernelPath = missing }));
        Assert.Equal(BootErrorReason.FileNotFound, e.Reason);

        e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("vmlinux", ElfBuilder.Vmlinux().Build()),
            InitrdPath = missing,
        }));
        Assert.Equal(BootErrorReason.FileNotFound, e.Reason);
        Assert.Contains("initrd", e.Message);
    }

    [Fact]
    public void Empty_initrd_is_rejected()
    {
        var e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("vmlinux", ElfBuilder.Vmlinux().Build()),
            InitrdPath = File("empty", []),
        }));
        Assert.Equal(BootErrorReason.InitrdEmpty, e.Reason);
    }

    [Fact]
    public void Cheap_checks_run_before_the_kernel_is_read()
    {
        var missing = Path.Combine(_dir, "nope");
        var e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest { KernelPath = missing, VcpuCount = 0 }));
        Assert.Equal(BootErrorReason.InvalidVcpuCount, e.Reason);
        e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest { KernelPath = missing, Cmdline = new string('x', 3000) }));
        Assert.Equal(BootErrorReason.CommandLineTooLong, e.Reason);
        using var tiny = GuestMemory.CreateAnonymous(MemoryLayout.MiB);
        e = Assert.Throws<BootException>(() => BootLoader.Prepare(tiny, new BootRequest { KernelPath = missing }));
        Assert.Equal(BootErrorReason.MemoryTooSmall, e.Reason);
    }

    [Fact]
    public void Kernel_specific_cmdline_limit_applies()
    {
        var e = Assert.Throws<BootException>(() => BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = File("bzImage", BzImageBuilder.Build(cmdlineSize: 16)),
            Cmdline = new string('x', 17),
        }));
        Assert.Equal(BootErrorReason.CommandLineTooLong, e.Reason);
    }
}
