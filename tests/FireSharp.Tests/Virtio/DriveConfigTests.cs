using FireSharp.Devices.Manager;
using FireSharp.Devices.Virtio;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Virtio;

/// <summary>Drive lists, the CLI drive syntax, device placement and the bad-input errors, all before any VM exists.</summary>
public class DriveConfigTests
{
    private static string Image(string dir, string name, long bytes)
    {
        string path = Path.Combine(dir, name);
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    [Theory]
    [InlineData("disk.img", "disk.img", false, false, null)]
    [InlineData("disk.img:ro", "disk.img", true, false, null)]
    [InlineData("disk.img:rw", "disk.img", false, false, null)]
    [InlineData("/a/b:c/disk.img:ro:root", "/a/b:c/disk.img", true, true, null)]
    [InlineData("disk.img:id=vol-7:ro", "disk.img", true, false, "vol-7")]
    [InlineData("disk.img:root:id=r00t", "disk.img", false, true, "r00t")]
    [InlineData("weird:name", "weird:name", false, false, null)]
    public void ParsesTheCliSyntax(string text, string path, bool ro, bool root, string? serial)
    {
        var d = DriveSpec.Parse(text);
        Assert.Equal(new DriveSpec { Path = path, ReadOnly = ro, IsRoot = root, Serial = serial }, d);
    }

    [Theory]
    [InlineData(":ro")]
    [InlineData("")]
    [InlineData("disk.img:ro:rw")]
    [InlineData("disk.img:root:root")]
    [InlineData("disk.img:id=a:id=b")]
    public void RejectsBadDriveSyntax(string text)
    {
        var e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Parse(text));
        Assert.Equal(VirtioConfigError.InvalidDriveSyntax, e.Reason);
        Assert.Equal("--drive", e.Field);
    }

    [Theory]
    [InlineData("disk.img:id=this-serial-is-too-long")]
    [InlineData("disk.img:id=tab\there")]
    [InlineData("disk.img:id=héllo")]
    public void RejectsBadSerials(string text)
    {
        var e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Parse(text));
        Assert.Equal(VirtioConfigError.InvalidSerial, e.Reason);
    }

    [Fact]
    public void AMissingImageIsAClearError()
    {
        var e = Assert.Throws<VirtioConfigException>(() => DeviceManager.Open([new DriveSpec { Path = "/does/not/exist.img" }]));
        Assert.Equal(VirtioConfigError.ImageNotFound, e.Reason);
        Assert.Equal("drive[0]", e.Field);
        Assert.Contains("/does/not/exist.img", e.Message);
    }

    [Fact]
    public void ADirectoryIsNotAnImage()
    {
        var e = Assert.Throws<VirtioConfigException>(() => DeviceManager.Open([new DriveSpec { Path = TestPaths.TempDir() }]));
        Assert.Equal(VirtioConfigError.NotARegularFile, e.Reason);
    }

    [Fact]
    public void AnImageWhoseSizeIsNotAMultipleOf512IsRejected()
    {
        string dir = TestPaths.TempDir();
        var good = Image(dir, "good.img", 4096);
        var bad = Image(dir, "bad.img", 1000);
        var e = Assert.Throws<VirtioConfigException>(() => DeviceManager.Open([new DriveSpec { Path = good }, new DriveSpec { Path = bad }]));
        Assert.Equal(VirtioConfigError.ImageSizeNotSectorMultiple, e.Reason);
        Assert.Equal("drive[1]", e.Field);
        Assert.Contains("1000 bytes", e.Message);
    }

    [Fact]
    public void TheSamePathTwiceIsRejectedAlsoThroughASymlinkOrARelativeName()
    {
        string dir = TestPaths.TempDir();
        var img = Image(dir, "a.img", 4096);
        string link = Path.Combine(dir, "link.img");
        File.CreateSymbolicLink(link, img);

        var e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate([new DriveSpec { Path = img }, new DriveSpec { Path = img, ReadOnly = true }]));
        Assert.Equal(VirtioConfigError.DuplicatePath, e.Reason);
        Assert.Equal("drive[1]", e.Field);
        e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate([new DriveSpec { Path = img }, new DriveSpec { Path = link }]));
        Assert.Equal(VirtioConfigError.DuplicatePath, e.Reason);
        string linkedDir = Path.Combine(TestPaths.TempDir(), "via");
        Directory.CreateSymbolicLink(linkedDir, dir);
        e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate([new DriveSpec { Path = img }, new DriveSpec { Path = Path.Combine(linkedDir, "a.img") }]));
        Assert.Equal(VirtioConfigError.DuplicatePath, e.Reason);
        string dotted = Path.Combine(dir, ".", "a.img");
        e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate([new DriveSpec { Path = dotted }, new DriveSpec { Path = img }]));
        Assert.Equal(VirtioConfigError.DuplicatePath, e.Reason);
    }

    [Fact]
    public void MoreThanSeventeenDevicesIsRejected()
    {
        string dir = TestPaths.TempDir();
        var drives = Enumerable.Range(0, 18).Select(i => new DriveSpec { Path = Image(dir, $"d{i}.img", 512) }).ToList();
        var e = Assert.Throws<VirtioConfigException>(() => DeviceManager.Open(drives));
        Assert.Equal(VirtioConfigError.TooManyDevices, e.Reason);
        Assert.Contains("17", e.Message);
        using var seventeen = DeviceManager.Open(drives.Take(17).ToList());
        Assert.Equal(17, seventeen.Plan.Count);
    }

    [Fact]
    public void TwoRootDrivesAreRejected()
    {
        string dir = TestPaths.TempDir();
        var e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate(
            [new DriveSpec { Path = Image(dir, "a", 512), IsRoot = true }, new DriveSpec { Path = Image(dir, "b", 512), IsRoot = true }]));
        Assert.Equal(VirtioConfigError.MultipleRootDrives, e.Reason);
    }

    [Fact]
    public void SlotsAddressesGsisAndTheLinuxCommandLine()
    {
        Assert.Equal(0xC000_1000UL, VirtioMmioLayout.Address(0));
        Assert.Equal(0xC001_1000UL, VirtioMmioLayout.Address(16));
        Assert.Equal(5u, VirtioMmioLayout.Gsi(0));
        Assert.Equal(21u, VirtioMmioLayout.Gsi(16));
        Assert.Equal("virtio_mmio.device=4K@0xc0002000:6", VirtioMmioLayout.CmdlineParameter(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => VirtioMmioLayout.Address(17));

        string dir = TestPaths.TempDir();
        using var set = DeviceManager.Open(
        [
            new DriveSpec { Path = Image(dir, "data.img", 4096) },
            new DriveSpec { Path = Image(dir, "root.img", 4096), ReadOnly = true, IsRoot = true },
        ]);
        Assert.Equal(" virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6 root=/dev/vdb ro", set.KernelParameters());
    }

    [Fact]
    public void AttachRegistersEachDeviceAndWiresIoeventfdAndIrqfd()
    {
        string dir = TestPaths.TempDir();
        using var memory = FireSharp.Memory.GuestMemory.CreateAnonymous(1024 * 1024);
        var registered = new List<(ulong Address, ulong Length, string Name)>();
        var ioeventfds = new List<(ulong Address, uint Value)>();
        var irqfds = new List<uint>();
        using var set = DeviceManager.Open(
        [
            new DriveSpec { Path = Image(dir, "root.img", 8192), IsRoot = true },
            new DriveSpec { Path = Image(dir, "data.img", 4096), Serial = "data" },
        ]);
        var ports = new List<(ulong Port, ulong Count)>();
        set.Attach(new DeviceHost
        {
            Memory = memory,
            RegisterMmio = (a, l, _, n) => registered.Add((a, l, n)),
            RegisterPort = (p, c, _, _) => ports.Add((p, c)),
            InterruptLine = _ => FireSharp.Devices.NullInterruptLine.Instance,
            AssignIoeventfd = (fd, a, v) => { Assert.True(fd > 0); ioeventfds.Add((a, v)); },
            AssignIrqfd = (fd, gsi) => { Assert.True(fd > 0); irqfds.Add(gsi); },
        }, new StandardDeviceHooks());
        // The boot timer's page, then one window per drive.
        Assert.Equal([0xC000_0000UL, 0xC000_1000UL, 0xC000_2000UL], registered.Select(r => r.Address));
        Assert.All(registered, r => Assert.Equal(0x1000UL, r.Length));
        Assert.Equal([(0x3f8UL, 8UL), (0x60UL, 5UL)], ports); // COM1, i8042
        Assert.Equal([(0xC000_1050UL, 0u), (0xC000_2050UL, 0u)], ioeventfds);
        Assert.Equal([5u, 6u], irqfds);
        var blocks = set.OfType<VirtioBlock>().ToList();
        Assert.Equal(16UL, blocks[0].CapacitySectors);
        Assert.Equal("data", blocks[1].Serial);
        Assert.All(set.Virtio, v => Assert.Equal(("ioeventfd", "irqfd"), (v.NotifyKind, v.InterruptKind)));
        Assert.Equal(["drive0", "drive1"], set.Stateful.Skip(3).Select(d => d.Descriptor.Id));
        Assert.EndsWith(" root=/dev/vda rw", set.KernelParameters());
    }
}
