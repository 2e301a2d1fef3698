using CsCheck;
using FireSharp.Boot;
using FireSharp.Memory;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Boot;

/// <summary>
/// The loaders against the project's real guest kernels, when they have been built (build/guest/vmlinux and
/// build/guest/bzImage, from kernel-config/) and the tiny PVH guests (build/guests/*.elf). Skipped, with the
/// reason, when a file is absent.
/// </summary>
public sealed class RealKernelTests : IDisposable
{
    private readonly GuestMemory _mem = GuestMemory.CreateAnonymous(512 * MemoryLayout.MiB);
    public void Dispose() => _mem.Dispose();

    private static string Guest(string name) => Path.Combine(RepoFiles.Root(), "build", "guest", name);

    private static byte[] ReadOrSkip(string path)
    {
        TestEnvironment.RequireFile(path, "make kernel rootfs");
        return File.ReadAllBytes(path);
    }

    [SkippableFact]
    public void Vmlinux_loads_with_64_bit_entry_and_pvh_note()
    {
        var path = Guest("vmlinux");
        ReadOrSkip(path);
        var k = KernelLoader.Load(_mem, path);
        Assert.Equal(KernelFormat.Elf, k.Format);
        Assert.True(k.IsLinux);
        Assert.NotNull(k.Entry64);
        Assert.NotNull(k.PvhEntry);
        Assert.InRange(k.Entry64.Value, k.KernelStart, k.KernelEnd - 1);
        Assert.InRange(k.PvhEntry.Value, k.KernelStart, k.KernelEnd - 1);
        Assert.True(k.KernelStart >= BootLayout.KernelMinAddress);
    }

    [SkippableFact]
    public void BzImage_loads_with_protocol_2_12_or_newer()
    {
        var path = Guest("bzImage");
        ReadOrSkip(path);
        var k = KernelLoader.Load(_mem, path);
        Assert.Equal(KernelFormat.BzImage, k.Format);
        Assert.True(k.BootProtocolVersion >= 0x020c, $"protocol 0x{k.BootProtocolVersion:x}");
        Assert.Equal(0x10_0200UL, k.Entry64);
        Assert.True(k.KernelEnd > k.KernelStart);
    }

    [SkippableTheory]
    [InlineData("vmlinux")]
    [InlineData("bzImage")]
    public void Truncated_copies_are_rejected(string name)
    {
        var image = ReadOrSkip(Guest(name));
        foreach (int len in new[] { 0, 3, 63, 64, 0x1f1, 0x205, 0x300, 4096, image.Length / 2, image.Length - 4096, image.Length - 1 })
        {
            if (len < 0 || len >= image.Length) continue;
            var ex = Record.Exception(() => KernelLoader.Load(_mem, image.AsSpan(0, len)));
            Assert.True(ex is BootException, $"{name} cut to {len} bytes gave {ex?.GetType().Name ?? "success"}");
        }
    }

    [SkippableTheory]
    [InlineData("vmlinux")]
    [InlineData("bzImage")]
    public void Corrupted_headers_are_rejected_cleanly(string name)
    {
        var image = ReadOrSkip(Guest(name));
        // Corrupt bytes in the first 4 KiB (ELF/program headers, or the setup header) and load.
        Gen.Select(Gen.Int[0, 4095], Gen.Byte).Array[1, 4].Sample(edits =>
        {
            var copy = image.ToArray();
            foreach (var (pos, value) in edits) copy[pos] = value;
            var ex = Record.Exception(() => KernelLoader.Load(_mem, copy));
            Assert.True(ex is null or BootException, $"{ex?.GetType().Name}: {ex?.Message}");
        }, iter: 40, threads: 1);
    }

    [SkippableTheory]
    [InlineData("vmlinux", false, BootEntryMode.Linux64)]
    [InlineData("vmlinux", true, BootEntryMode.Pvh32)]
    [InlineData("bzImage", true, BootEntryMode.Linux64)]
    public void Prepare_with_real_kernel_and_initramfs(string kernel, bool preferPvh, BootEntryMode expected)
    {
        var kernelPath = Guest(kernel);
        var initrdPath = Guest("initramfs.cpio");
        TestEnvironment.RequireFile(kernelPath, "make kernel");
        TestEnvironment.RequireFile(initrdPath, "make rootfs");
        var plan = BootLoader.Prepare(_mem, new BootRequest
        {
            KernelPath = kernelPath,
            InitrdPath = initrdPath,
            Cmdline = "console=ttyS0 reboot=k panic=-1 nokaslr",
            VcpuCount = 1,
            PreferPvh = preferPvh,
        });
        Assert.Equal(expected, plan.Mode);
        Assert.NotNull(plan.InitrdGpa);
        Assert.True(plan.InitrdGpa >= plan.Kernel.KernelEnd || plan.InitrdGpa + plan.InitrdSize <= plan.Kernel.KernelStart);
        var initrd = File.ReadAllBytes(initrdPath);
        Assert.True(_mem.GetSpan(plan.InitrdGpa!.Value, initrd.Length).SequenceEqual(initrd));
    }

    [SkippableFact]
    public void Tiny_pvh_guests_load_as_pvh()
    {
        var dir = Path.Combine(RepoFiles.Root(), "build", "guests");
        var elfs = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.elf") : [];
        TestEnvironment.Require(elfs.Length > 0, $"there are no tiny guests in {dir} (make guests)");
        foreach (var path in elfs)
        {
            var k = KernelLoader.Load(_mem, path);
            Assert.NotNull(k.PvhEntry);
            Assert.Equal(BootEntryMode.Pvh32, BootLoader.ChooseEntry(k, preferPvh: false).Mode);
        }
    }
}
