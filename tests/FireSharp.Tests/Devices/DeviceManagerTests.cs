using FireSharp.Devices;
using FireSharp.Devices.Manager;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Memory;
using FireSharp.Tests.Support;
using FireSharp.Tests.Virtio;

namespace FireSharp.Tests.Devices;

/// <summary>
/// The device manager without KVM: planning (slots, ids, limits), opening, the one wiring path with its fallback,
/// the devices' threads, the lifecycle order, and rebuilding devices from a snapshot's descriptors.
/// </summary>
public class DeviceManagerTests
{
    private static string Image(string dir, string name, long bytes = 4096)
    {
        string path = Path.Combine(dir, name);
        using var f = File.Create(path);
        f.SetLength(bytes);
        return path;
    }

    /// <summary>Whether this process has a descriptor open on <paramref name="path"/>.</summary>
    private static bool IsOpen(string path) =>
        Directory.GetFiles("/proc/self/fd").Any(fd =>
        {
            try { return new FileInfo(fd).LinkTarget == path; }
            catch (IOException) { return false; }
        });

    private static void WaitFor(Func<bool> condition, string what)
    {
        // A hang guard, not a timing assertion.
        if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(30))) Assert.Fail($"timed out waiting for {what}");
    }

    /// <summary>A host whose KVM refuses irqfd and ioeventfd: every device falls back to exits through the VMM.</summary>
    private sealed class FallbackHost
    {
        public FallbackHost(GuestMemory memory)
        {
            Host = new DeviceHost
            {
                Memory = memory,
                RegisterMmio = (a, l, d, n) => Windows.Add((a, d, n)),
                RegisterPort = (_, _, _, _) => { },
                InterruptLine = gsi => Lines.TryGetValue(gsi, out var l) ? l : Lines[gsi] = new FakeInterruptLine(),
                AssignIoeventfd = (_, _, _) => throw new IOException("ioeventfd refused"),
                AssignIrqfd = (_, _) => throw new IOException("irqfd refused"),
                Logger = Logger,
            };
        }

        public DeviceHost Host { get; }
        public List<(ulong Address, IBusDevice Device, string Name)> Windows { get; } = [];
        public Dictionary<uint, FakeInterruptLine> Lines { get; } = [];
        public ListLogger Logger { get; } = new();
    }

    [Fact]
    public void Kinds_take_slots_in_registration_order_whatever_the_spec_order()
    {
        string dir = TestPaths.TempDir();
        IDeviceConfig[] configs =
        [
            new VsockDeviceSpec(5, Path.Combine(dir, "v.sock")),
            new DriveSpec { Path = Image(dir, "a.img"), Id = "a" },
            new DriveSpec { Path = Image(dir, "b.img"), Id = "b", IsRoot = true, ReadOnly = true },
        ];
        var plan = DevicePlanner.Plan(configs);
        Assert.Equal(["a", "b", VsockDeviceKind.DeviceId], plan.Select(p => p.Id));
        Assert.Equal([0, 1, 2], plan.Select(p => p.Slot));
        Assert.Equal([0xC000_1000UL, 0xC000_2000UL, 0xC000_3000UL], plan.Select(p => p.Address));
        Assert.Equal([5u, 6u, 7u], plan.Select(p => p.Gsi));
        Assert.Equal(" virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6 root=/dev/vdb ro virtio_mmio.device=4K@0xc0003000:7",
            DevicePlanner.KernelParameters(plan));
        Assert.Equal(["com1", "i8042", "boot-timer", "a", "b", "vsock"], DevicePlanner.Descriptors(configs).Select(d => d.Id));
        Assert.Equal("2", DevicePlanner.Descriptors(configs)[^1].Settings[DeviceManager.SlotKey]);
    }

    [Fact]
    public void Ids_are_unique_across_the_vm_and_each_kind_keeps_its_limit()
    {
        string dir = TestPaths.TempDir();
        var e = Assert.Throws<VirtioConfigException>(() => DevicePlanner.Plan([new DriveSpec { Path = Image(dir, "a.img"), Id = "com1" }]));
        Assert.Equal(VirtioConfigError.DuplicateId, e.Reason);
        Assert.Equal("drive[0]", e.Field);
        e = Assert.Throws<VirtioConfigException>(() => DevicePlanner.Plan(
            [new DriveSpec { Path = Image(dir, "b.img"), Id = VsockDeviceKind.DeviceId }, new VsockDeviceSpec(3, Path.Combine(dir, "v.sock"))]));
        Assert.Equal(VirtioConfigError.DuplicateId, e.Reason);
        Assert.Contains("'vsock'", e.Message);
        e = Assert.Throws<VirtioConfigException>(() => DevicePlanner.Plan(
            [new VsockDeviceSpec(3, Path.Combine(dir, "v1.sock")), new VsockDeviceSpec(4, Path.Combine(dir, "v2.sock"))]));
        Assert.Equal(VirtioConfigError.TooManyDevices, e.Reason);
        // Seventeen slots in all, whatever the kinds.
        var many = Enumerable.Range(0, 17).Select(i => (IDeviceConfig)new DriveSpec { Path = Image(dir, $"d{i}.img") }).ToList();
        Assert.Equal(17, DevicePlanner.Plan(many).Count);
        e = Assert.Throws<VirtioConfigException>(() => DevicePlanner.Plan([.. many, new VsockDeviceSpec(3, Path.Combine(dir, "v.sock"))]));
        Assert.Equal(VirtioConfigError.TooManyDevices, e.Reason);
    }

    [Fact]
    public void A_failed_open_leaves_nothing_open()
    {
        string dir = TestPaths.TempDir();
        string good = Image(dir, "good.img"), bad = Image(dir, "bad.img", 1000);
        var e = Assert.Throws<VirtioConfigException>(() => DeviceManager.Open([new DriveSpec { Path = good }, new DriveSpec { Path = bad }]));
        Assert.Equal("drive[1]", e.Field);
        Assert.Equal(DeviceConfigProblem.Invalid, e.Problem);
        Assert.False(IsOpen(good), "the first drive's image stayed open");

        using (var devices = DeviceManager.Open([new DriveSpec { Path = good }]))
            Assert.True(IsOpen(good));
        Assert.False(IsOpen(good), "Dispose of a manager that was never attached left the image open");
    }

    [Fact]
    public void Without_irqfd_and_ioeventfd_every_device_falls_back_to_the_same_exits_and_still_works()
    {
        string dir = TestPaths.TempDir();
        using var memory = GuestMemory.CreateAnonymous(1024 * 1024);
        var host = new FallbackHost(memory);
        string uds = Path.Combine(dir, "v.sock");
        using var devices = DeviceManager.Open([new DriveSpec { Path = Image(dir, "disk.img", 64 * 1024) }, new VsockDeviceSpec(3, uds)]);
        devices.Attach(host.Host, new StandardDeviceHooks());

        Assert.All(devices.Virtio, v => Assert.Equal(("MMIO exit", "KVM_IRQ_LINE"), (v.NotifyKind, v.InterruptKind)));
        Assert.Equal(4, host.Logger.Entries.Count(l => l.Id.Id == 4010)); // irqfd and ioeventfd, per device
        Assert.True(host.Lines.ContainsKey(5) && host.Lines.ContainsKey(6), "the fallback lines are the devices' GSIs");

        // The block device through its MMIO window, as a guest's driver would: the QueueNotify write wakes the
        // device's thread (not the writing one), and the interrupt comes on the fallback line.
        var block = devices.Virtio[0];
        var window = host.Windows.Single(m => m.Address == block.Address).Device;
        Assert.Same(block.Transport, window);
        var driver = new FakeDriver(memory, 16);
        Mmio.Bringup(block.Transport, 16);
        var request = driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        Mmio.W32(window, VirtioMmioRegister.QueueNotify, 0);
        WaitFor(() => driver.UsedIdx == 1, "the request");
        Assert.Equal(VirtioBlock.StatusOk, request.Status(memory));
        WaitFor(() => host.Lines[block.Gsi].Pulses >= 1, "the interrupt on KVM_IRQ_LINE");
        Assert.True(File.Exists(uds));
    }

    [Fact]
    public void The_lifecycle_quiesce_restore_and_dispose_reaches_every_device()
    {
        string dir = TestPaths.TempDir();
        using var memory = GuestMemory.CreateAnonymous(1024 * 1024);
        var host = new FallbackHost(memory);
        string disk = Image(dir, "disk.img", 64 * 1024), uds = Path.Combine(dir, "v.sock");
        var devices = DeviceManager.Open([new DriveSpec { Path = disk }, new VsockDeviceSpec(3, uds)]);
        // As a restore attaches them: quiesced until their state is set.
        devices.Attach(host.Host, new StandardDeviceHooks(), quiesced: true);
        Assert.True(devices.IsQuiesced);
        Assert.Equal(["com1", "i8042", "boot-timer", "drive0", "vsock"], devices.Stateful.Select(s => s.Descriptor.Id));

        var block = devices.Virtio[0];
        var driver = new FakeDriver(memory, 16);
        Mmio.Bringup(block.Transport, 16);
        var request = driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        Mmio.Notify(block.Transport);
        devices.CompleteRestore(resume: false); // left paused: still quiesced
        Assert.True(devices.IsQuiesced);
        block.Transport.ProcessQueue(0); // not even a direct call runs a quiesced queue
        Assert.Equal(0, driver.UsedIdx);

        devices.Unquiesce();
        Assert.False(devices.IsQuiesced);
        WaitFor(() => driver.UsedIdx == 1, "the request held while quiesced");
        Assert.Equal(VirtioBlock.StatusOk, request.Status(memory));
        devices.Quiesce();
        Assert.True(devices.Virtio.All(v => v.Transport.IsQuiesced));

        devices.Dispose();
        Assert.False(File.Exists(uds), "the vsock socket outlived the devices");
        Assert.False(IsOpen(disk), "the drive's image outlived the devices");
        devices.Unquiesce(); // harmless once disposed
        devices.Dispose();
    }

    private static DeviceDescriptor Drive(string id, int slot, string path, long size = 4096) => new(id, BlockDeviceKind.Name)
    {
        Settings = new Dictionary<string, string>
        {
            [DeviceManager.SlotKey] = slot.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [BlockDeviceKind.Keys.Path] = path,
            [BlockDeviceKind.Keys.ReadOnly] = "false",
            [BlockDeviceKind.Keys.Root] = "false",
            [BlockDeviceKind.Keys.Serial] = "",
            [BlockDeviceKind.Keys.SizeBytes] = size.ToString(System.Globalization.CultureInfo.InvariantCulture),
        },
    };

    [Fact]
    public void A_snapshots_descriptors_are_rebuilt_by_their_kinds_into_the_same_slots()
    {
        string dir = TestPaths.TempDir();
        string a = Image(dir, "a.img"), b = Image(dir, "b.img"), copy = Image(dir, "copy.img");
        var vsock = new DeviceDescriptor(VsockDeviceKind.DeviceId, VsockDeviceKind.Name)
        {
            Settings = new Dictionary<string, string> { [DeviceManager.SlotKey] = "2", [VsockDeviceKind.Keys.Cid] = "9", [VsockDeviceKind.Keys.Path] = Path.Combine(dir, "old.sock") },
        };
        // Recorded out of slot order, with a standard device the manager leaves to the caller.
        DeviceDescriptor[] saved = [vsock, Drive("second", 1, b), StandardDevices.Descriptors[0], Drive("first", 0, a)];
        var configs = DeviceRestore.ConfigsFor(saved, [new DeviceOverride(BlockDeviceKind.Name, "second", copy), new DeviceOverride(VsockDeviceKind.Name, null, Path.Combine(dir, "new.sock"))]);
        Assert.Equal(3, configs.Count);
        Assert.Equal(("first", a), (((DriveSpec)configs[0]).Id, ((DriveSpec)configs[0]).Path));
        Assert.Equal(("second", copy), (((DriveSpec)configs[1]).Id, ((DriveSpec)configs[1]).Path));
        Assert.Equal(new VsockDeviceSpec(9, Path.Combine(dir, "new.sock")), configs[2]);

        DeviceRestoreProblem Problem(IReadOnlyList<DeviceDescriptor> d, params DeviceOverride[] o) =>
            Assert.Throws<DeviceRestoreException>(() => DeviceRestore.ConfigsFor(d, o)).Problem;
        // The guest's driver knows each device at its old address: a gap in the slots cannot be rebuilt.
        Assert.Equal(DeviceRestoreProblem.Mismatch, Problem([Drive("first", 0, a), Drive("second", 2, b)]));
        // Broken records, a gone image, an override for a device the snapshot lacks, another size.
        Assert.Equal(DeviceRestoreProblem.Corrupt, Problem([Drive("first", 0, a) with { Settings = new Dictionary<string, string>() }]));
        Assert.Equal(DeviceRestoreProblem.Corrupt, Problem([Drive("first", 0, a) with { Settings = new Dictionary<string, string> { [DeviceManager.SlotKey] = "0" } }]));
        Assert.Equal(DeviceRestoreProblem.NotFound, Problem([Drive("first", 0, Path.Combine(dir, "gone.img"))]));
        Assert.Equal(DeviceRestoreProblem.Mismatch, Problem([Drive("first", 0, a)], new DeviceOverride(BlockDeviceKind.Name, "nope", copy)));
        Assert.Equal(DeviceRestoreProblem.Mismatch, Problem([Drive("first", 0, a)], new DeviceOverride(VsockDeviceKind.Name, null, Path.Combine(dir, "x.sock"))));
        Assert.Equal(DeviceRestoreProblem.Mismatch, Problem([Drive("first", 0, a, size: 8192)]));
        // Two drives on one image are not a valid set, whatever the snapshot says.
        Assert.Equal(DeviceRestoreProblem.Mismatch, Problem([Drive("first", 0, a), Drive("second", 1, a)]));
    }
}
