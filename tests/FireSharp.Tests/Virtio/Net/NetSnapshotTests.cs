using FireSharp.Devices.Virtio.Net;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using FireSharp.Devices.Manager;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>A microVM (tiny guest) with an interface on a tap: snapshotted, then restored onto another tap.</summary>
[Collection("kvm")]
public sealed class NetSnapshotTests
{
    private static bool TunUsable()
    {
        try
        {
            using var tap = TapBackend.Open(null);
            return true;
        }
        catch (NetConfigException) { return false; }
    }

    [SkippableFact]
    public void A_vm_with_a_nic_is_snapshotted_and_restored_onto_another_tap()
    {
        KvmTestSupport.RequireKvm();
        TestEnvironment.Require(TunUsable(), "/dev/net/tun is not usable here (needs CAP_NET_ADMIN)");
        string dir = Path.Combine(TestPaths.TempDir(), "snap");
        string other = "fsns" + Environment.ProcessId % 100000;
        var nic = new NetworkInterfaceSpec { Id = "net0", Mac = "02:00:00:00:00:42" };
        using (var vm = MicroVm.Create(new VmSpec { KernelPath = TestPaths.Guest("counter"), MemoryMib = 16, NetworkInterfaces = [nic] }))
        {
            var device = Assert.Single(vm.Devices.OfType<VirtioNet>());
            Assert.Equal(0, vm.Devices.PlacementOf(device).Slot); // the only virtio device: the first slot
            Assert.StartsWith("fstap", device.Backend.Name);
            vm.Start();
            SnapshotWriter.Create(vm, dir, resume: false);
            vm.Stop();
        }

        var saved = SnapshotReader.Load(dir).State.Config.Devices.Single(d => d.Kind == NetDeviceKind.Name);
        Assert.Equal("net0", saved.Id);
        Assert.Equal("02:00:00:00:00:42", saved.Settings[NetDeviceKind.Keys.Mac]);
        Assert.Equal("true", saved.Settings[NetDeviceKind.Keys.Auto]);

        using (var restored = SnapshotRestore.Restore(dir, new RestoreOverrides { TapNames = new Dictionary<string, string> { ["net0"] = other } }))
        {
            var device = Assert.Single(restored.Devices.OfType<VirtioNet>());
            Assert.Equal(other, device.Backend.Name);
            Assert.Equal("02:00:00:00:00:42", NetworkInterfaceSpec.FormatMac(device.Mac));
            Assert.Equal(int.Parse(saved.Settings[DeviceManager.SlotKey], System.Globalization.CultureInfo.InvariantCulture), restored.Devices.PlacementOf(device).Slot);
            Assert.True(Directory.Exists("/sys/class/net/" + other));

            // A second clone onto the same tap: busy, refused as a device-set problem before it runs.
            var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, new RestoreOverrides { TapNames = new Dictionary<string, string> { ["net0"] = other } }));
            Assert.Equal(SnapshotErrorReason.DeviceSetMismatch, e.Reason);
            Assert.Contains("in use", e.Message);
            restored.Stop();
        }
        Assert.False(Directory.Exists("/sys/class/net/" + other), "the restored VM's tap outlived it");

        var wrong = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, new RestoreOverrides { TapNames = new Dictionary<string, string> { ["eth9"] = other } }));
        Assert.Equal(SnapshotErrorReason.DeviceSetMismatch, wrong.Reason);
    }
}
