using FireSharp.Devices.Manager;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Virtio.Rng;

/// <summary>
/// virtio-rng in a real VM, added through the device manager alone: placed after the other devices with KVM's
/// irqfd and ioeventfd, announced on the command line, and serving a driver that reaches it through the VM's MMIO
/// bus (as a vCPU's exit would; the tiny guest itself never runs).
/// </summary>
[Collection("kvm")]
public class RngMicroVmTests
{
    private static void WaitFor(Func<bool> condition, string what)
    {
        // A hang guard, not a timing assertion.
        if (!SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(30))) Assert.Fail($"timed out waiting for {what}");
    }

    [SkippableFact]
    public void A_vm_with_rng_serves_the_guest_entropy_through_its_device_manager()
    {
        KvmTestSupport.RequireKvm();
        string dir = TestPaths.TempDir();
        string disk = Path.Combine(dir, "disk.img");
        File.WriteAllBytes(disk, new byte[64 * 1024]);
        using var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = TestPaths.Guest("hello"),
            MemoryMib = 16,
            Rng = new RngSpec(),
            Drives = [new DriveSpec { Path = disk }],
        });

        var rng = Assert.Single(vm.Devices.OfType<VirtioRng>());
        var placed = vm.Devices.PlacementOf(rng);
        Assert.Equal((1, 0xC000_2000UL, 6u), (placed.Slot, placed.Address, placed.Gsi)); // after the drive
        Assert.Equal(("ioeventfd", "irqfd"), (placed.NotifyKind, placed.InterruptKind));
        Assert.Equal((RngDeviceKind.DeviceId, RngDeviceKind.Name, "1"), (placed.Descriptor.Id, placed.Descriptor.Kind, placed.Descriptor.Settings[DeviceManager.SlotKey]));
        Assert.Contains(vm.Devices.Stateful, s => ReferenceEquals(s.Device, placed.Transport) && s.Descriptor.Id == RngDeviceKind.DeviceId);
        Assert.EndsWith(" virtio_mmio.device=4K@0xc0002000:6", vm.Devices.KernelParameters());

        var window = new BusWindow(vm.Machine.MmioBus, placed.Address);
        Assert.Equal(0x74726976u, Mmio.R32(window, VirtioMmioRegister.MagicValue));
        Assert.Equal(4u, Mmio.R32(window, VirtioMmioRegister.DeviceId));
        Mmio.Bringup(window, 16);
        var memory = vm.Machine.Memory;
        var driver = new FakeDriver(memory, 16);
        ulong buffer = driver.Alloc(256);
        memory.GetSpan(buffer, 256).Clear();
        driver.AddChain(new Buf(buffer, 256, true));
        Mmio.Notify(window);

        WaitFor(() => driver.UsedIdx == 1, "the entropy request");
        Assert.Equal(256u, driver.Used(0).Len);
        var bytes = new byte[256];
        memory.Read(buffer, bytes);
        Assert.Contains(bytes, b => b != 0); // 256 random bytes all zero: probability 2^-2048
        Assert.Equal(1L, rng.Counters.Requests);
    }

    [SkippableFact]
    public void Without_asking_there_is_no_entropy_device()
    {
        KvmTestSupport.RequireKvm();
        using var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("hello"), MemoryMib = 16 });
        Assert.Empty(vm.Devices.Virtio);
        Assert.Equal("", vm.Devices.KernelParameters());
        Assert.False(vm.Machine.MmioBus.TryFind(0xC000_1000, out _, out _));
    }
}
