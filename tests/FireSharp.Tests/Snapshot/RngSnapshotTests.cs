using FireSharp.Devices.Manager;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Tests.Virtio;
using FireSharp.Vm;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// A VM with an entropy device through a snapshot: recorded as its own kind, rebuilt in the same slot with its
/// queue where the driver left it, and serving the restored guest; a VM without one restores without one.
/// </summary>
[Collection("kvm")]
public sealed class RngSnapshotTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static void WaitFor(Func<bool> condition, string what)
    {
        // A hang guard, not a timing assertion.
        if (!SpinWait.SpinUntil(condition, TestTimeout)) Assert.Fail($"timed out waiting for {what}");
    }

    private static BusWindow Window(MicroVm vm) =>
        new(vm.Machine.MmioBus, vm.Devices.PlacementOf(Assert.Single(vm.Devices.OfType<VirtioRng>())).Address);

    [SkippableFact]
    public void A_vm_with_rng_round_trips_through_a_snapshot_and_its_device_keeps_serving()
    {
        KvmTestSupport.RequireKvm();
        string dir = Path.Combine(TempDir(), "snap");
        byte[] savedTransport;
        using (var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("counter"), MemoryMib = 32, Rng = new RngSpec() }))
        {
            vm.Start();
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > 1000, TestTimeout), "counter guest did not start counting");
            // A driver brings the device up and takes one request before the snapshot (the counter guest never looks).
            var window = Window(vm);
            Mmio.Bringup(window, 16);
            var driver = new FakeDriver(vm.Machine.Memory, 16);
            driver.AddChain(new Buf(driver.Alloc(32), 32, true));
            Mmio.Notify(window);
            WaitFor(() => driver.UsedIdx == 1, "the request before the snapshot");

            SnapshotWriter.Create(vm, dir, resume: false);
            savedTransport = vm.Devices.Virtio[0].Transport.SaveState();
        }

        var state = SnapshotReader.Load(dir).State;
        var descriptor = Assert.Single(state.Config.Devices, d => d.Kind == RngDeviceKind.Name);
        Assert.Equal(RngDeviceKind.DeviceId, descriptor.Id);
        Assert.Equal("0", descriptor.Settings[DeviceManager.SlotKey]);
        Assert.Equal(savedTransport, state.DeviceStates[RngDeviceKind.DeviceId]);

        using var restored = SnapshotRestore.Restore(dir, new RestoreOverrides { Resume = false });
        var rng = Assert.Single(restored.Devices.OfType<VirtioRng>());
        Assert.Equal(0, restored.Devices.PlacementOf(rng).Slot);
        Assert.Equal(savedTransport, restored.Devices.Virtio[0].Transport.SaveState());
        Assert.True(restored.Devices.IsQuiesced); // left paused: the device too
        ulong atSnapshot = Counter(restored);
        restored.Resume();
        Assert.True(SpinWait.SpinUntil(() => Counter(restored) > atSnapshot, TestTimeout), "the restored guest does not run");

        // The restored driver's next request (its ring continues where the snapshot left it) is served.
        var next = new FakeDriver(restored.Machine.Memory, 16);
        next.SetAvailIdx(1);
        ulong buffer = next.Alloc(64);
        restored.Machine.Memory.GetSpan(buffer, 64).Clear();
        next.AddChain(new Buf(buffer, 64, true));
        Mmio.Notify(Window(restored));
        WaitFor(() => next.UsedIdx == 2, "the request after the restore");
        Assert.Equal(64u, next.Used(1).Len);
        var bytes = new byte[64];
        restored.Machine.Memory.Read(buffer, bytes);
        Assert.Contains(bytes, b => b != 0);
    }

    [SkippableFact]
    public void A_snapshot_without_rng_restores_without_it()
    {
        string dir = TakeCounterSnapshot();
        Assert.DoesNotContain(SnapshotReader.Load(dir).State.Config.Devices, d => d.Kind == RngDeviceKind.Name);
        using var vm = SnapshotRestore.Restore(dir, new RestoreOverrides { Resume = false });
        Assert.Empty(vm.Devices.OfType<VirtioRng>());
    }
}
