using FireSharp.Boot;
using FireSharp.Devices.Legacy;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Vm;

/// <summary>Bad input to the VMM gets a typed, clear error and creates nothing.</summary>
[Collection("kvm")]
public class BadInputTests
{
    private static MicroVm Create(string kernel, ulong memMib = 128, int vcpus = 1) =>
        MicroVm.Create(new VmSpec { KernelPath = kernel, MemoryMib = memMib, Vcpus = vcpus, Serial = NullSerialSink.Instance });

    [Fact]
    public void MissingKernel()
    {
        var e = Assert.Throws<BootException>(() => Create("/nonexistent/kernel.elf"));
        Assert.Equal(BootErrorReason.FileNotFound, e.Reason);
        Assert.Contains("/nonexistent/kernel.elf", e.Message);
    }

    [SkippableFact]
    public void TruncatedElf()
    {
        KvmTestSupport.RequireKvm();
        var path = Path.Combine(TestPaths.TempDir(), "truncated.elf");
        File.WriteAllBytes(path, File.ReadAllBytes(TestPaths.Guest("hello"))[..100]);
        var e = Assert.Throws<BootException>(() => Create(path));
        Assert.Equal(BootErrorReason.Truncated, e.Reason);
    }

    [SkippableFact]
    public void WrongElfClass()
    {
        KvmTestSupport.RequireKvm();
        var bytes = File.ReadAllBytes(TestPaths.Guest("hello"));
        bytes[4] = 1; // EI_CLASS = ELFCLASS32
        var path = Path.Combine(TestPaths.TempDir(), "elf32.elf");
        File.WriteAllBytes(path, bytes);
        Assert.Equal(BootErrorReason.WrongElfClass, Assert.Throws<BootException>(() => Create(path)).Reason);
    }

    [SkippableFact]
    public void SegmentOutsideGuestMemory()
    {
        KvmTestSupport.RequireKvm();
        // Move the guest's PT_LOAD to 1.75 GiB, beyond a 128 MiB guest's RAM.
        var bytes = File.ReadAllBytes(TestPaths.Guest("hello"));
        ulong phoff = BitConverter.ToUInt64(bytes, 0x20);
        int phnum = BitConverter.ToUInt16(bytes, 0x38);
        bool patched = false;
        for (int i = 0; i < phnum; i++)
        {
            int ph = (int)phoff + i * 56;
            if (BitConverter.ToUInt32(bytes, ph) != 1) continue; // PT_LOAD
            BitConverter.TryWriteBytes(bytes.AsSpan(ph + 0x18), 0x7000_0000UL); // p_paddr
            patched = true;
        }
        Assert.True(patched);
        var path = Path.Combine(TestPaths.TempDir(), "far.elf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<BootException>(() => Create(path));
        Assert.Equal(BootErrorReason.SegmentOutsideMemory, e.Reason);
    }

    [SkippableFact]
    public void NotAKernelAtAll()
    {
        KvmTestSupport.RequireKvm();
        var path = Path.Combine(TestPaths.TempDir(), "text.bin");
        File.WriteAllText(path, "this is not a kernel, just some text that is long enough to be parsed as one\n");
        Assert.Equal(BootErrorReason.NotElfOrBzImage, Assert.Throws<BootException>(() => Create(path)).Reason);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(1UL << 40)]
    public void ZeroOrAbsurdMemory(ulong memMib)
    {
        var e = Assert.Throws<MachineConfigException>(() => Create(TestPaths.Guest("hello"), memMib: memMib));
        Assert.Equal("mem", e.Field);
    }

    [SkippableFact]
    public void MemoryAboveTheHostsIsRefused()
    {
        KvmTestSupport.RequireKvm();
        // 900 GiB: within the absolute limit, above this (or any test) machine's RAM.
        var e = Assert.Throws<MachineConfigException>(() => Create(TestPaths.Guest("hello"), memMib: 900 * 1024));
        Assert.Contains("host has", e.Message);
    }

    [SkippableFact]
    public void MoreVcpusThanKvmAllows()
    {
        KvmTestSupport.RequireKvm();
        var e = Assert.Throws<MachineConfigException>(() => Create(TestPaths.Guest("hello"), vcpus: 100_000));
        Assert.Equal("vcpus", e.Field);
        Assert.Contains("allows at most", e.Message);
    }

    [Fact]
    public void ZeroVcpus()
    {
        Assert.Equal("vcpus", Assert.Throws<MachineConfigException>(() => Create(TestPaths.Guest("hello"), vcpus: 0)).Field);
    }
}
