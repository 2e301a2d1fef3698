using System.Buffers.Binary;
using CsCheck;
using FireSharp.Boot;
using FireSharp.Memory;

namespace FireSharp.Tests.Boot;

public sealed class BzImageLoaderTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(64 * MemoryLayout.MiB);

    public void Dispose() => _mem.Dispose();

    private BootException Rejects(byte[] image, BootErrorReason reason, GuestMemory? mem = null)
    {
        var e = Assert.Throws<BootException>(() => KernelLoader.Load(mem ?? _mem, image));
        Assert.Equal(reason, e.Reason);
        return e;
    }

    [Fact]
    public void Loads_protected_mode_kernel_at_1MiB_with_entry_at_plus_0x200()
    {
        var img = BzImageBuilder.Build(payloadBytes: 8192);
        var k = KernelLoader.Load(_mem, img);

        Assert.Equal(KernelFormat.BzImage, k.Format);
        Assert.True(k.IsLinux);
        Assert.Equal(0x10_0200UL, k.Entry64);
        Assert.Null(k.PvhEntry);
        Assert.Equal((ushort)0x020f, k.BootProtocolVersion);
        Assert.True(_mem.GetSpan(0x10_0000, 8192).SequenceEqual(img.AsSpan(BzImageBuilder.SetupBytes)));
        // Header kept from 0x1f1 to 0x202 + jump byte (0x6a).
        Assert.Equal(0x26c - 0x1f1, k.SetupHeader.Length);
        Assert.True(k.SetupHeader.Span.SequenceEqual(img.AsSpan(0x1f1, 0x26c - 0x1f1)));
        // Runs from pref_address (16 MiB) with init_size (1 MiB): that range is part of the kernel's footprint.
        Assert.Equal(0x10_0000UL, k.KernelStart);
        Assert.Equal(0x110_0000UL, k.KernelEnd);
        Assert.Equal(0x7fff_ffffu, k.InitrdAddrMax);
        Assert.Equal(2048, k.MaxCmdlineBytes);
        Assert.Equal((BootEntryMode.Linux64, 0x10_0200UL), BootLoader.ChooseEntry(k, preferPvh: true));
    }

    [Fact]
    public void Setup_sects_zero_means_four()
    {
        var img = BzImageBuilder.Build();
        img[0x1f1] = 0;
        KernelLoader.Load(_mem, img);
        Assert.Equal(img[BzImageBuilder.SetupBytes], _mem.Read<byte>(0x10_0000));
    }

    [Fact]
    public void Small_cmdline_size_limits_the_command_line()
    {
        var k = KernelLoader.Load(_mem, BzImageBuilder.Build(cmdlineSize: 255));
        Assert.Equal(256, k.MaxCmdlineBytes);
    }

    [Theory]
    [InlineData(0x0200)]
    [InlineData(0x020b)]
    public void Old_boot_protocol_is_rejected(int version)
    {
        var e = Rejects(BzImageBuilder.Build(version: (ushort)version), BootErrorReason.OldBootProtocol);
        Assert.Contains("2.12", e.Message);
    }

    [Fact]
    public void Missing_xlf_kernel_64_is_rejected() =>
        Rejects(BzImageBuilder.Build(xloadflags: 0x2), BootErrorReason.Not64BitCapable);

    [Fact]
    public void Init_size_beyond_memory_is_memory_too_small()
    {
        var e = Rejects(BzImageBuilder.Build(initSize: 0x400_0000), BootErrorReason.MemoryTooSmall);
        Assert.Contains("64 MiB", e.Message);
    }

    [Fact]
    public void Kernel_needing_more_than_guest_ram_is_memory_too_small()
    {
        using var small = GuestMemory.CreateAnonymous(8 * MemoryLayout.MiB);
        Rejects(BzImageBuilder.Build(), BootErrorReason.MemoryTooSmall, small); // runs at 16 MiB
    }

    [Fact]
    public void Malformed_headers_are_rejected()
    {
        var noHigh = BzImageBuilder.Build();
        noHigh[0x211] = 0;
        Rejects(noHigh, BootErrorReason.MalformedSetupHeader);

        var shortHeader = BzImageBuilder.Build();
        shortHeader[0x201] = 0x10;
        Rejects(shortHeader, BootErrorReason.MalformedSetupHeader);

        Rejects(BzImageBuilder.Build(initSize: 0), BootErrorReason.MalformedSetupHeader);
        Rejects(BzImageBuilder.Build(prefAddress: 0x1000), BootErrorReason.MalformedSetupHeader);

        var hugeSyssize = BzImageBuilder.Build();
        BinaryPrimitives.WriteUInt32LittleEndian(hugeSyssize.AsSpan(0x1f4), 0xffff_ffff);
        Rejects(hugeSyssize, BootErrorReason.Truncated);
    }

    [Fact]
    public void Neither_format_is_rejected()
    {
        Rejects(new byte[4096], BootErrorReason.NotElfOrBzImage);
        var noBootFlag = BzImageBuilder.Build();
        noBootFlag[0x1fe] = 0;
        Rejects(noBootFlag, BootErrorReason.NotElfOrBzImage);
        Rejects([1, 2], BootErrorReason.Truncated);
    }

    [Fact]
    public void Every_prefix_is_rejected_with_boot_exception()
    {
        var img = BzImageBuilder.Build(payloadBytes: 512);
        for (int len = 0; len < img.Length; len++)
        {
            var ex = Record.Exception(() => KernelLoader.Load(_mem, img.AsSpan(0, len)));
            Assert.True(ex is BootException, $"prefix of {len}/{img.Length} bytes gave {ex?.GetType().Name ?? "success"}: {ex?.Message}");
        }
    }

    [Fact]
    public void Random_corruption_of_the_header_gives_success_or_boot_exception()
    {
        var img = BzImageBuilder.Build(payloadBytes: 512);
        var gen = Gen.Select(Gen.Int[0, img.Length], Gen.Select(Gen.Int[0x1f0, 0x270], Gen.Byte).Array[1, 6]);
        gen.Sample(t =>
        {
            var (len, edits) = t;
            var copy = img.ToArray();
            foreach (var (pos, value) in edits) copy[pos] = value;
            var ex = Record.Exception(() => KernelLoader.Load(_mem, copy.AsSpan(0, len)));
            Assert.True(ex is null or BootException, $"{ex?.GetType().Name}: {ex?.Message}");
        }, iter: 3000);
    }
}
