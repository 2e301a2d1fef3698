using System.Buffers.Binary;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Kvm.Interop;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>Snapshots of VMs with virtio-blk drives: the drive set, path overrides, mismatches, I/O across a snapshot.</summary>
[Collection("kvm")]
public sealed class DriveSnapshotTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private const ulong PatternMagic = 0x31304B4C42565346; // "FSVBLK01", tests/guests/virtio-blk-bench.S

    private static string Image(string dir, string name, int bytes, bool pattern = false)
    {
        string path = Path.Combine(dir, name);
        var data = new byte[bytes];
        if (pattern) WritePattern(data);
        File.WriteAllBytes(path, data);
        return path;
    }

    /// <summary>virtio-blk-bench's sector pattern: sector s holds s, then the magic, then zeros.</summary>
    private static void WritePattern(byte[] data)
    {
        for (int s = 0; s < data.Length / 512; s++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(s * 512), (ulong)s);
            BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(s * 512 + 8), PatternMagic);
        }
    }

    /// <summary>The counter guest with two drives (the guest does not touch them), snapshotted paused.</summary>
    private static (string Snapshot, string Rw, string Ro, byte[][] TransportStates) CounterWithDrivesSnapshot()
    {
        KvmTestSupport.RequireKvm();
        string dir = TempDir();
        string rw = Image(dir, "rw.img", 1 << 20);
        string ro = Image(dir, "ro.img", 64 << 10);
        var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = TestPaths.Guest("counter"),
            MemoryMib = 32,
            Drives = [new DriveSpec { Path = rw, Id = "data" }, new DriveSpec { Path = ro, ReadOnly = true, Serial = "SER-1" }],
        });
        using (vm)
        {
            vm.Start();
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > 1000, TestTimeout), "counter guest did not start counting");
            Assert.True(vm.Pause(TestTimeout));
            Assert.True(vm.Devices.IsQuiesced);
            vm.Machine.Memory.Write(CounterGpa, Sentinel);
            string snap = Path.Combine(TempDir(), "snap");
            SnapshotWriter.Create(vm, snap, resume: false);
            Assert.True(vm.Devices.IsQuiesced); // paused through MicroVm.Pause: stays quiesced
            return (snap, rw, ro, [.. vm.TransportStates()]);
        }
    }

    /// <summary>
    /// A jailed worker restores with its drives handed over open (PreopenedFiles), their paths absent from its root:
    /// the restore takes the handles (size checked on them), not the paths.
    /// </summary>
    [SkippableFact]
    public void A_drive_handed_over_open_restores_though_its_path_is_gone()
    {
        var (snap, rw, ro, _) = CounterWithDrivesSnapshot();
        File.Move(rw, rw + ".moved");
        File.Move(ro, ro + ".moved");
        PreopenedFiles.Add(rw, readOnly: false, File.OpenHandle(rw + ".moved", FileMode.Open, FileAccess.ReadWrite));
        PreopenedFiles.Add(ro, readOnly: true, File.OpenHandle(ro + ".moved", FileMode.Open, FileAccess.Read));
        using var vm = SnapshotRestore.Restore(snap, new RestoreOverrides());
        Assert.Equal(new[] { rw, ro }, vm.Drives().Select(d => d.Path));
        Assert.Null(PreopenedFiles.Length(rw, readOnly: false)); // taken by the drive
        Assert.Null(PreopenedFiles.Length(ro, readOnly: true));
        Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1_000_000, TestTimeout), "restored guest does not run");
        Assert.Equal(VmExitKind.Stopped, vm.Stop().Kind);
    }

    [SkippableFact]
    public void SnapshotRecordsTheDrivesAndRestoreRecreatesThem()
    {
        var (snap, rw, ro, states) = CounterWithDrivesSnapshot();

        var devices = SnapshotReader.Load(snap).State.Config.Devices;
        var drives = devices.Where(d => d.Kind == BlockDeviceKind.Name).ToList();
        Assert.Equal(new[] { "data", "drive1" }, drives.Select(d => d.Id));
        Assert.Equal(rw, drives[0].Settings[BlockDeviceKind.Keys.Path]);
        Assert.Equal("false", drives[0].Settings[BlockDeviceKind.Keys.ReadOnly]);
        Assert.Equal((1 << 20).ToString(), drives[0].Settings[BlockDeviceKind.Keys.SizeBytes]);
        Assert.Equal("", drives[0].Settings[BlockDeviceKind.Keys.Serial]);
        Assert.Equal(ro, drives[1].Settings[BlockDeviceKind.Keys.Path]);
        Assert.Equal("true", drives[1].Settings[BlockDeviceKind.Keys.ReadOnly]);
        Assert.Equal("SER-1", drives[1].Settings[BlockDeviceKind.Keys.Serial]);
        Assert.Equal((64 << 10).ToString(), drives[1].Settings[BlockDeviceKind.Keys.SizeBytes]);

        // Same paths.
        using (var vm = SnapshotRestore.Restore(snap, new RestoreOverrides { Resume = false }))
        {
            Assert.Equal(2, vm.Devices.Virtio.Count);
            Assert.Equal(new[] { rw, ro }, vm.Drives().Select(d => d.Path));
            Assert.True(vm.Blocks()[1].ReadOnly);
            Assert.Equal("SER-1", vm.Blocks()[1].Serial);
            Assert.Equal(states, vm.TransportStates());
            Assert.True(vm.Devices.IsQuiesced); // left paused: devices too
            vm.Resume();
            Assert.False(vm.Devices.IsQuiesced);
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1_000_000, TestTimeout), "restored guest does not run");
            Assert.Equal(VmExitKind.Stopped, vm.Stop().Kind);
        }

        // A clone with its own copy of the writable drive.
        string copy = Path.Combine(TempDir(), "clone-rw.img");
        File.Copy(rw, copy);
        using (var vm = SnapshotRestore.Restore(snap, new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["data"] = copy } }))
        {
            Assert.Equal(new[] { copy, ro }, vm.Drives().Select(d => d.Path));
            Assert.Equal(copy, ((RawImageBackend)vm.Blocks()[0].Backend).Path);
            Assert.Equal(states, vm.TransportStates());
            Assert.False(vm.Devices.IsQuiesced);
            Assert.True(SpinWait.SpinUntil(() => Counter(vm) > Sentinel + 1_000_000, TestTimeout), "restored clone does not run");
            // The clone itself can be snapshotted again, recording its own drive path.
            string again = Path.Combine(TempDir(), "again");
            SnapshotWriter.Create(vm, again, resume: true);
            Assert.Equal(VmState.Running, vm.Machine.State);
            Assert.False(vm.Devices.IsQuiesced);
            Assert.Equal(copy, SnapshotReader.Load(again).State.Config.Devices.Single(d => d.Id == "data").Settings[BlockDeviceKind.Keys.Path]);
        }
    }

    [SkippableFact]
    public void MismatchedDrivesAreRefusedBeforeAnyVmExists()
    {
        var (snap, rw, _, _) = CounterWithDrivesSnapshot();
        int fds = KvmVmFds();
        string other = Path.Combine(TempDir(), "other");
        Directory.CreateDirectory(other);

        void Refused(RestoreOverrides o, SnapshotErrorReason reason, params string[] words)
        {
            var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(snap, o).Dispose());
            Assert.Equal(reason, e.Reason);
            foreach (var w in words) Assert.Contains(w, e.Message);
            Assert.Equal(fds, KvmVmFds());
        }

        // A clone's image of another size.
        string small = Image(other, "small.img", 512 << 10);
        Refused(new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["data"] = small } },
            SnapshotErrorReason.DeviceSetMismatch, "'data'", "1048576 bytes", "524288 bytes", small);
        // An override for a drive the snapshot does not have.
        Refused(new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["nope"] = rw } },
            SnapshotErrorReason.DeviceSetMismatch, "'nope'");
        // A missing override image.
        Refused(new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["data"] = Path.Combine(other, "missing.img") } },
            SnapshotErrorReason.DeviceSetMismatch, "does not exist");
        // The caller expects a different number of drives.
        var expected = SnapshotReader.Load(snap).State.Config.Devices.Where(d => d.Id != "drive1").ToList();
        Refused(new RestoreOverrides { ExpectedDevices = expected }, SnapshotErrorReason.DeviceSetMismatch, "2 drive(s), not 1");
        // The original image changed size since the snapshot.
        File.WriteAllBytes(rw, new byte[2 << 20]);
        Refused(RestoreOverrides.Default, SnapshotErrorReason.DeviceSetMismatch, "'data'", "2097152 bytes");
        // ... or is gone.
        File.Delete(rw);
        Refused(RestoreOverrides.Default, SnapshotErrorReason.NotFound, "'data'", rw);
        // A symlink is judged by its target's size (the link itself is a few bytes).
        string target = Image(other, "target.img", 1 << 20), link = Path.Combine(other, "link.img");
        File.CreateSymbolicLink(link, target);
        using (var linked = SnapshotRestore.Restore(snap, new RestoreOverrides { Resume = false, DrivePaths = new Dictionary<string, string> { ["data"] = link } }))
            Assert.Equal(link, linked.Drives()[0].Path);
        string smallLink = Path.Combine(other, "small-link.img");
        File.CreateSymbolicLink(smallLink, small);
        Refused(new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["data"] = smallLink } },
            SnapshotErrorReason.DeviceSetMismatch, "524288 bytes");
        // With a good copy it restores.
        string good = Image(other, "good.img", 1 << 20);
        using var vm = SnapshotRestore.Restore(snap, new RestoreOverrides { Resume = false, DrivePaths = new Dictionary<string, string> { ["data"] = good } });
        Assert.Equal(good, vm.Drives()[0].Path);
    }

    /// <summary>
    /// virtio-blk-bench reads the sector pattern, checking every request's data; it is snapshotted while
    /// requests are in flight, the original is destroyed, and the restored guest finishes the run with
    /// correct data and the full byte count.
    /// </summary>
    [SkippableFact]
    public void GuestIoInFlightContinuesAfterRestore()
    {
        KvmTestSupport.RequireKvm();
        string dir = TempDir();
        string image = Image(dir, "pattern.img", 4 << 20, pattern: true);
        const int mib = 64;
        var console = new MemorySerialSink();
        string snap = Path.Combine(TempDir(), "snap");
        long requestsAtSnapshot;
        using (var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = TestPaths.Guest("virtio-blk-bench"),
            MemoryMib = 32,
            Cmdline = $"mib={mib} req=4 depth=8 batch=2 mode=read",
            Drives = [new DriveSpec { Path = image, ReadOnly = true }],
            Serial = console,
        }))
        {
            vm.Start();
            Assert.True(SpinWait.SpinUntil(() => vm.Blocks()[0].Counters.Requests >= 200 || vm.Exited.IsCompleted, TestTimeout),
                "the guest did not start its I/O");
            Assert.False(vm.Exited.IsCompleted, $"the guest finished before the snapshot: {console.GetText()}");
            SnapshotWriter.Create(vm, snap, resume: false);
            requestsAtSnapshot = vm.Blocks()[0].Counters.Requests;
            Assert.StartsWith("VBLK-DEV ", console.GetText());
            Assert.DoesNotContain("VBLK-DONE", console.GetText());
        }
        Assert.InRange(requestsAtSnapshot, 200, mib * 256 - 1);

        var restoredConsole = new MemorySerialSink();
        using var restored = SnapshotRestore.Restore(snap, new RestoreOverrides { Serial = restoredConsole });
        Assert.True(restored.Exited.Wait(TimeSpan.FromSeconds(120)), $"the restored guest did not finish: {restoredConsole.GetText()}");
        string output = restoredConsole.GetText();
        Assert.Equal(VmExitKind.Reset, restored.Exited.Result.Kind);
        Assert.DoesNotContain("VBLK-BADDATA", output);
        Assert.DoesNotContain("VBLK-ERROR", output);
        Assert.Contains($"VBLK-DONE mode=read bytes={mib << 20} ", output);
        // The restored device did the rest of the work (the guest's reset of the device is not a request).
        long after = restored.Blocks()[0].Counters.Requests;
        Assert.Equal(mib * 256L, requestsAtSnapshot + after);
    }

    /// <summary>
    /// virtio-blk-bench writes the sector pattern; snapshotted mid-run, its clone finishes the run into its
    /// own copy of the disk (a DrivePaths override): the copy ends complete, the original keeps the
    /// half-written state of the snapshot time.
    /// </summary>
    [SkippableFact]
    public void CloneFinishesGuestWritesIntoItsOwnDiskCopy()
    {
        KvmTestSupport.RequireKvm();
        string dir = TempDir();
        // 64 MiB in 4 KiB requests: long enough that the snapshot reliably lands mid-run (with 4 MiB the
        // ring-3 guest sometimes finished between the progress check and the pause).
        const int diskBytes = 64 << 20, requests = diskBytes / 4096;
        string image = Image(dir, "disk.img", diskBytes);
        var console = new MemorySerialSink();
        string snap = Path.Combine(TempDir(), "snap");
        using (var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = TestPaths.Guest("virtio-blk-bench"),
            MemoryMib = 32,
            Cmdline = "mib=64 req=4 depth=8 batch=2 mode=write",
            Drives = [new DriveSpec { Path = image, Id = "disk" }],
            Serial = console,
        }))
        {
            vm.Start();
            Assert.True(SpinWait.SpinUntil(() => vm.Blocks()[0].Counters.Requests >= 100 || vm.Exited.IsCompleted, TestTimeout),
                "the guest did not start its I/O");
            Assert.False(vm.Exited.IsCompleted, $"the guest finished before the snapshot: {console.GetText()}");
            SnapshotWriter.Create(vm, snap, resume: false);
            Assert.InRange(vm.Blocks()[0].Counters.Requests, 100, requests - 1);
        }
        byte[] atSnapshot = File.ReadAllBytes(image);
        string copy = Path.Combine(TempDir(), "clone.img");
        File.Copy(image, copy);

        var restoredConsole = new MemorySerialSink();
        using (var clone = SnapshotRestore.Restore(snap, new RestoreOverrides
        {
            Serial = restoredConsole,
            DrivePaths = new Dictionary<string, string> { ["disk"] = copy },
        }))
        {
            Assert.True(clone.Exited.Wait(TimeSpan.FromSeconds(120)), $"the restored guest did not finish: {restoredConsole.GetText()}");
            Assert.Contains($"VBLK-DONE mode=write bytes={diskBytes} ", restoredConsole.GetText());
            Assert.DoesNotContain("VBLK-ERROR", restoredConsole.GetText());
        }
        var expected = new byte[diskBytes];
        WritePattern(expected);
        Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(copy)), "the clone's disk does not hold the full pattern");
        // The original was not touched by the clone, and it was still incomplete.
        Assert.True(atSnapshot.AsSpan().SequenceEqual(File.ReadAllBytes(image)));
        Assert.False(expected.AsSpan().SequenceEqual(atSnapshot));
    }

    [Fact]
    public void DriveIdsMustBeUnique()
    {
        string dir = TempDir();
        string a = Image(dir, "a.img", 4096), b = Image(dir, "b.img", 4096);
        DriveSpec.Validate([new DriveSpec { Path = a }, new DriveSpec { Path = b, Id = "x" }]);
        var e = Assert.Throws<VirtioConfigException>(() => DriveSpec.Validate([new DriveSpec { Path = a }, new DriveSpec { Path = b, Id = "drive0" }]));
        Assert.Equal(VirtioConfigError.DuplicateId, e.Reason);
        Assert.Equal("drive[1]", e.Field);
        Assert.Equal("drive1", DriveSpec.EffectiveId([new DriveSpec { Path = a, Id = "x" }, new DriveSpec { Path = b }], 1));
    }
}
