using System.Net.Sockets;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using FireSharp.Devices.Manager;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// The vsock device in snapshots, with the counter guest (which never drives it): it is recorded (CID, path,
/// slot), rebuilt on restore at each clone's own socket path, and a restore without an override refuses a
/// recorded path that is still in use. (The Linux fixture tests show a guest's agent answering after restore.)
/// </summary>
[Collection("kvm")]
public sealed class VsockSnapshotTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static (string Dir, string Uds) TakeVsockSnapshot(ulong cid = 7)
    {
        KvmTestSupport.RequireKvm();
        string tmp = SnapshotTestSupport.TempDir();
        string uds = Path.Combine(tmp, "orig.sock");
        var console = new MemorySerialSink();
        using var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = TestPaths.Guest("counter"),
            MemoryMib = 32,
            Serial = console,
            Vsock = new VsockDeviceSpec(cid, uds),
        });
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => Counter(vm) > 1000, TestTimeout), "counter guest did not start counting");
        Assert.True(vm.Pause(TestTimeout));
        vm.Machine.Memory.Write(CounterGpa, Sentinel);
        string dir = Path.Combine(tmp, "snap");
        SnapshotWriter.Create(vm, dir, resume: false);
        Assert.True(File.Exists(uds), "the original VM's socket should exist while it lives");
        return (dir, uds);
    }

    [SkippableFact]
    public void The_vsock_device_is_recorded_and_each_clone_gets_its_own_socket()
    {
        var (dir, originalUds) = TakeVsockSnapshot(cid: 7);
        // The snapshotted VM is gone; its socket went with it.
        Assert.False(File.Exists(originalUds));

        var state = SnapshotReader.Load(dir).State;
        var vsock = Assert.Single(state.Config.Devices, d => d.Kind == VsockDeviceKind.Name);
        Assert.Equal(VsockDeviceKind.DeviceId, vsock.Id);
        Assert.Equal("7", vsock.Settings[VsockDeviceKind.Keys.Cid]);
        Assert.Equal(originalUds, vsock.Settings[VsockDeviceKind.Keys.Path]);
        Assert.Equal("0", vsock.Settings[DeviceManager.SlotKey]); // no drives: the first virtio-mmio slot
        Assert.True(state.DeviceStates.ContainsKey(VsockDeviceKind.DeviceId));

        string tmp = SnapshotTestSupport.TempDir();
        var paths = Enumerable.Range(0, 3).Select(i => Path.Combine(tmp, $"clone{i}.sock")).ToArray();
        var clones = new MicroVm?[3];
        try
        {
            // Concurrently, as a pool would.
            Parallel.For(0, 3, i => clones[i] = SnapshotRestore.Restore(dir, new RestoreOverrides { VsockUdsPath = paths[i] }));
            for (int i = 0; i < 3; i++)
            {
                var clone = clones[i]!;
                var device = Assert.Single(clone.Devices.OfType<VirtioVsock>());
                Assert.Equal(7UL, device.GuestCid);
                Assert.Equal(paths[i], device.UdsPath);
                Assert.Equal(0, clone.Devices.PlacementOf(device).Slot);
                Assert.True(File.Exists(paths[i]), $"clone {i} has no socket at {paths[i]}");
                Assert.Contains(clone.Devices.Stateful, d => d.Descriptor.Kind == VsockDeviceKind.Name);
                Assert.True(SpinWait.SpinUntil(() => Counter(clone) > Sentinel + 1_000_000, TestTimeout), $"clone {i} does not continue");
            }
            // The host side works: a client's CONNECT is taken by the device (the counter guest never answers, so
            // the device closes it at its connect timeout; here it is enough that the socket accepts).
            using (var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                s.Connect(new UnixDomainSocketEndPoint(paths[1]));
                s.Send("CONNECT 52\n"u8.ToArray());
            }
            // A clone's snapshot records its own path, and restores again.
            string again = Path.Combine(tmp, "again");
            SnapshotWriter.Create(clones[0]!, again, resume: true);
            var vsock2 = Assert.Single(SnapshotReader.Load(again).State.Config.Devices, d => d.Kind == VsockDeviceKind.Name);
            Assert.Equal(paths[0], vsock2.Settings[VsockDeviceKind.Keys.Path]);
        }
        finally
        {
            foreach (var c in clones) c?.Dispose();
        }
        foreach (var p in paths) Assert.False(File.Exists(p), $"{p} was left behind");
    }

    [SkippableFact]
    public void Without_an_override_the_recorded_path_is_used_only_if_it_is_free()
    {
        var (dir, originalUds) = TakeVsockSnapshot();
        int fds = KvmVmFds();
        // Something (the original VM, another clone) holds the recorded path: refused, no VM created.
        File.WriteAllText(originalUds, "");
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, RestoreOverrides.Default));
        Assert.Equal(SnapshotErrorReason.DeviceSetMismatch, e.Reason);
        Assert.Contains("VsockUdsPath", e.Message);
        Assert.Equal(fds, KvmVmFds());
        // An override that is itself taken is refused the same way.
        string taken = Path.Combine(SnapshotTestSupport.TempDir(), "taken.sock");
        File.WriteAllText(taken, "");
        e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, new RestoreOverrides { VsockUdsPath = taken }));
        Assert.Equal(SnapshotErrorReason.DeviceSetMismatch, e.Reason);
        Assert.Equal(fds, KvmVmFds());

        // Once the path is free, the snapshot restores onto it.
        File.Delete(originalUds);
        using var vm = SnapshotRestore.Restore(dir, RestoreOverrides.Default);
        Assert.Equal(originalUds, Assert.Single(vm.Devices.OfType<VirtioVsock>()).UdsPath);
        Assert.True(File.Exists(originalUds));
    }

    [SkippableFact]
    public void Run_restore_takes_vsock_as_the_clone_socket_path()
    {
        var (dir, _) = TakeVsockSnapshot(cid: 9);
        string tmp = SnapshotTestSupport.TempDir();
        string uds = Path.Combine(tmp, "run.sock"), console = Path.Combine(tmp, "console.txt");
        // The CID is the snapshot's: asking for another is bad input (exit 2), and nothing is created.
        Assert.Equal(2, FireSharp.Cli.CliApp.Run(["run", "--insecure-unauthenticated", "--restore", dir, "--vsock", uds, "--vsock-cid", "5", "--serial", console]));
        Assert.False(File.Exists(uds));
        // --vsock PATH is this clone's socket; the run ends after 50 ms (exit 0) and removes it.
        Assert.Equal(0, FireSharp.Cli.CliApp.Run(["run", "--insecure-unauthenticated", "--restore", dir, "--vsock", uds, "--exit-after-ms", "50", "--serial", console]));
        Assert.False(File.Exists(uds));
    }

    [SkippableFact]
    public void A_snapshot_without_vsock_restores_without_it()
    {
        string dir = TakeCounterSnapshot();
        using var vm = SnapshotRestore.Restore(dir, RestoreOverrides.Default);
        Assert.Empty(vm.Devices.OfType<VirtioVsock>());
        Assert.DoesNotContain(vm.Devices.Stateful, d => d.Descriptor.Kind == VsockDeviceKind.Name);
    }

    [Fact]
    public void Vsock_settings_round_trip_and_bad_ones_are_refused()
    {
        var d = new FireSharp.Devices.DeviceDescriptor(VsockDeviceKind.DeviceId, VsockDeviceKind.Name)
        {
            Settings = new Dictionary<string, string> { [VsockDeviceKind.Keys.Cid] = "9", [VsockDeviceKind.Keys.Path] = "/tmp/x.sock" },
        };
        Assert.Equal(new VsockDeviceSpec(9, "/tmp/x.sock"), VsockDeviceKind.Instance.Parse(d));
        foreach (var key in new[] { VsockDeviceKind.Keys.Cid, VsockDeviceKind.Keys.Path })
        {
            var missing = d with { Settings = d.Settings.Where(kv => kv.Key != key).ToDictionary() };
            Assert.Equal(FireSharp.Devices.DeviceRestoreProblem.Corrupt, Assert.Throws<FireSharp.Devices.DeviceRestoreException>(() => VsockDeviceKind.Instance.Parse(missing)).Problem);
        }
        var bad = d with { Settings = new Dictionary<string, string>(d.Settings) { [VsockDeviceKind.Keys.Cid] = "-1" } };
        Assert.Equal(FireSharp.Devices.DeviceRestoreProblem.Corrupt, Assert.Throws<FireSharp.Devices.DeviceRestoreException>(() => VsockDeviceKind.Instance.Parse(bad)).Problem);
    }
}
