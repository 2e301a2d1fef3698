using System.Buffers.Binary;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;
using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using static FireSharp.Tests.Snapshot.SnapshotTestSupport;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// Damaged or mismatched snapshots are refused with a typed reason, and no VM is created: the check
/// happens before /dev/kvm is touched (the test counts this process's KVM VM file descriptors).
/// </summary>
[Collection("kvm")]
public sealed class SnapshotRejectionTests : IDisposable
{
    public void Dispose() => SnapshotTestSupport.CleanUp();

    private static string State(string dir) => Path.Combine(dir, SnapshotWriter.StateFileName);
    private static string Memory(string dir) => Path.Combine(dir, SnapshotWriter.MemoryFileName);

    private static SnapshotException AssertRefused(string dir, SnapshotErrorReason reason, RestoreOverrides? overrides = null)
    {
        int before = KvmVmFds();
        var e = Assert.Throws<SnapshotException>(() => SnapshotRestore.Restore(dir, overrides ?? new RestoreOverrides()));
        Assert.Equal(reason, e.Reason);
        Assert.Equal(before, KvmVmFds());
        return e;
    }

    [SkippableFact]
    public void AStateFileOverTheCapIsRefusedWithoutBeingReadIn()
    {
        string dir = CopySnapshot(TakeCounterSnapshot(16));
        // A valid state file followed by a sparse tail: one byte over 16 MiB (no disk space, but 16 MiB if read).
        using (var f = new FileStream(State(dir), FileMode.Open, FileAccess.Write))
            f.SetLength(SnapshotReader.MaxStateFileBytes + 1);
        var e = AssertRefused(dir, SnapshotErrorReason.Corrupt);
        Assert.Contains("16 MiB cap", e.Message);
        Assert.Contains(State(dir), e.Message);
        // Exactly at the cap it is read (and then refused for what it holds, not for its size).
        using (var f = new FileStream(State(dir), FileMode.Open, FileAccess.Write))
            f.SetLength(SnapshotReader.MaxStateFileBytes);
        Assert.DoesNotContain("cap", AssertRefused(dir, SnapshotErrorReason.Corrupt).Message);
    }

    [SkippableFact]
    public void DamagedStateFilesAreRefused()
    {
        string good = TakeCounterSnapshot(16);
        byte[] original = File.ReadAllBytes(State(good));

        // Sanity: the undamaged copy restores.
        using (SnapshotRestore.Restore(CopySnapshot(good), new RestoreOverrides { Resume = false })) { }

        // Corrupt: a flipped byte in the content is caught by the CRC ...
        string dir = CopySnapshot(good);
        var bytes = (byte[])original.Clone();
        bytes[SnapshotFormat.HeaderLength + bytes.Length / 2 - SnapshotFormat.HeaderLength / 2] ^= 0x40;
        File.WriteAllBytes(State(dir), bytes);
        Assert.Contains("CRC", AssertRefused(dir, SnapshotErrorReason.ChecksumMismatch).Message);

        // ... and so is a wrong CRC field over intact content.
        bytes = (byte[])original.Clone();
        bytes[24] ^= 1;
        File.WriteAllBytes(State(dir), bytes);
        AssertRefused(dir, SnapshotErrorReason.ChecksumMismatch);

        // Not a snapshot at all.
        bytes = (byte[])original.Clone();
        bytes[0] = (byte)'X';
        File.WriteAllBytes(State(dir), bytes);
        Assert.Contains("not a FireSharp snapshot", AssertRefused(dir, SnapshotErrorReason.Corrupt).Message);

        // Content with a valid CRC that does not parse (e.g. written by a buggy tool).
        bytes = (byte[])original.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(SnapshotFormat.HeaderLength + 8), 100_000); // vCPU count
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(24), System.IO.Hashing.Crc64.HashToUInt64(bytes.AsSpan(SnapshotFormat.HeaderLength)));
        AssertRefused(dir, SnapshotErrorReason.Corrupt);

        // Truncated: within the content, and within the header.
        File.WriteAllBytes(State(dir), original.AsSpan(0, original.Length - 100).ToArray());
        Assert.Contains("truncated", AssertRefused(dir, SnapshotErrorReason.Truncated).Message);
        File.WriteAllBytes(State(dir), original.AsSpan(0, 12).ToArray());
        AssertRefused(dir, SnapshotErrorReason.Truncated);
        File.WriteAllBytes(State(dir), []);
        AssertRefused(dir, SnapshotErrorReason.Truncated);

        // A format version from the future.
        bytes = (byte[])original.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), SnapshotFormat.Version + 1);
        File.WriteAllBytes(State(dir), bytes);
        Assert.Contains("version", AssertRefused(dir, SnapshotErrorReason.UnsupportedVersion).Message);

        // Missing files.
        File.Delete(State(dir));
        AssertRefused(dir, SnapshotErrorReason.NotFound);
        AssertRefused(Path.Combine(dir, "nope"), SnapshotErrorReason.NotFound);
    }

    [SkippableFact]
    public void MemoryFileOfTheWrongSizeIsRefused()
    {
        string good = TakeCounterSnapshot(16);
        string dir = CopySnapshot(good);
        using (var f = File.OpenHandle(Memory(dir), FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(f, RandomAccess.GetLength(f) - 4096);
        Assert.Contains("bytes of memory", AssertRefused(dir, SnapshotErrorReason.MemoryFileSizeMismatch).Message);
        using (var f = File.OpenHandle(Memory(dir), FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(f, 32L << 20);
        AssertRefused(dir, SnapshotErrorReason.MemoryFileSizeMismatch);
        File.Delete(Memory(dir));
        AssertRefused(dir, SnapshotErrorReason.NotFound);
    }

    [SkippableFact]
    public void DifferentDeviceSetIsRefused()
    {
        string good = TakeCounterSnapshot(16);
        var state = SnapshotReader.Load(good).State;

        // The caller expects a device set the snapshot was not taken with.
        var expected = state.Config.Devices.Append(new DeviceDescriptor("rootfs", BlockDeviceKind.Name)).ToList();
        var e = AssertRefused(good, SnapshotErrorReason.DeviceSetMismatch, new RestoreOverrides { ExpectedDevices = expected });
        Assert.Contains("rootfs", e.Message);
        AssertRefused(good, SnapshotErrorReason.DeviceSetMismatch, new RestoreOverrides { ExpectedDevices = state.Config.Devices.Skip(1).ToList() });
        // ... while the same set (ids and kinds) is accepted.
        using (SnapshotRestore.Restore(good, new RestoreOverrides { Resume = false, ExpectedDevices = [.. state.Config.Devices] })) { }

        // Overrides for devices the snapshot does not have.
        AssertRefused(good, SnapshotErrorReason.DeviceSetMismatch, new RestoreOverrides { DrivePaths = new Dictionary<string, string> { ["rootfs"] = "/tmp/x.ext4" } });
        AssertRefused(good, SnapshotErrorReason.DeviceSetMismatch, new RestoreOverrides { VsockUdsPath = "/tmp/v.sock" });
        AssertRefused(good, SnapshotErrorReason.DeviceSetMismatch, new RestoreOverrides { TapNames = new Dictionary<string, string> { ["eth0"] = "tap9" } });

        // A snapshot taken with a device this VMM does not build (here: one device more, one less).
        foreach (var devices in new[]
        {
            state.Config.Devices.Append(new DeviceDescriptor("gpu0", "virtio-gpu")).ToList(),
            state.Config.Devices.Where(d => d.Id != "i8042").ToList(),
        })
        {
            string dir = CopySnapshot(good);
            var states = devices.ToDictionary(d => d.Id, d => state.DeviceStates.GetValueOrDefault(d.Id) ?? [1]);
            File.WriteAllBytes(State(dir), SnapshotFormat.Encode(state with { Config = state.Config with { Devices = devices }, DeviceStates = states }));
            AssertRefused(dir, SnapshotErrorReason.DeviceSetMismatch);
        }

        // A drive whose recorded settings are missing: the state file is damaged.
        {
            string dir = CopySnapshot(good);
            var devices = state.Config.Devices.Append(new DeviceDescriptor("rootfs", BlockDeviceKind.Name)).ToList();
            var states = devices.ToDictionary(d => d.Id, d => state.DeviceStates.GetValueOrDefault(d.Id) ?? [1]);
            File.WriteAllBytes(State(dir), SnapshotFormat.Encode(state with { Config = state.Config with { Devices = devices }, DeviceStates = states }));
            Assert.Contains("rootfs", AssertRefused(dir, SnapshotErrorReason.Corrupt).Message);
        }
    }

    [SkippableFact]
    public void DamagedDeviceStateIsRefusedAndTheVmIsDisposed()
    {
        string good = TakeCounterSnapshot(16);
        var state = SnapshotReader.Load(good).State;
        string dir = CopySnapshot(good);
        var states = new Dictionary<string, byte[]>(state.DeviceStates) { ["com1"] = [1, 2, 3] };
        File.WriteAllBytes(State(dir), SnapshotFormat.Encode(state with { DeviceStates = states }));
        // Device states are the devices' own encodings: they are checked as the devices are rebuilt,
        // and the half-built VM is released again.
        var e = AssertRefused(dir, SnapshotErrorReason.Corrupt);
        Assert.Contains("com1", e.Message);
    }
}
