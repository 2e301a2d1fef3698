using System.Runtime.InteropServices;
using CsCheck;
using FireSharp.Kvm.Interop;
using FireSharp.Snapshot;
using FireSharp.Devices;

namespace FireSharp.Tests.Snapshot;

/// <summary>The state file format without KVM: round trips and every rejection.</summary>
public class SnapshotFormatTests
{
    private static T RandomStruct<T>(Random r) where T : unmanaged
    {
        T value = default;
        r.NextBytes(MemoryMarshal.AsBytes(new Span<T>(ref value)));
        return value;
    }

    private static SnapshotState Synthetic(int seed, int vcpus = 2)
    {
        var r = new Random(seed);
        return new SnapshotState
        {
            Config = new MachineConfig
            {
                MemoryBytes = (ulong)r.Next(1, 4096) << 20,
                VcpuCount = vcpus,
                InKernelIrqchip = r.Next(2) == 0,
                Pvm = true,
                KernelPath = "/k/vmlinux-" + seed,
                Devices =
                [
                    new DeviceDescriptor("com1", "serial16550"),
                    new DeviceDescriptor("rootfs", "virtio-blk") { Settings = new Dictionary<string, string> { ["path"] = "/r.ext4", ["readOnly"] = "false" } },
                ],
            },
            Vm = new VmKernelState
            {
                PicMaster = RandomStruct<kvm_irqchip>(r),
                PicSlave = null,
                Ioapic = RandomStruct<kvm_irqchip>(r),
                Pit = RandomStruct<kvm_pit_state2>(r),
                Clock = r.Next(2) == 0 ? null : RandomStruct<kvm_clock_data>(r),
            },
            Vcpus = [.. Enumerable.Range(0, vcpus).Select(i => new VcpuState
            {
                Id = i,
                Cpuid = [.. Enumerable.Range(0, r.Next(1, 40)).Select(_ => RandomStruct<kvm_cpuid_entry2>(r))],
                Regs = RandomStruct<kvm_regs>(r),
                Sregs = RandomStruct<kvm_sregs>(r),
                Fpu = RandomStruct<kvm_fpu>(r),
                Xsave = i == 0 ? RandomStruct<kvm_xsave>(r) : null,
                Xcrs = RandomStruct<kvm_xcrs>(r),
                DebugRegs = RandomStruct<kvm_debugregs>(r),
                Msrs = [.. Enumerable.Range(0, r.Next(0, 60)).Select(j => new kvm_msr_entry { index = (uint)j, data = (ulong)r.NextInt64() })],
                Lapic = RandomStruct<kvm_lapic_state>(r),
                Events = RandomStruct<kvm_vcpu_events>(r),
                MpState = i == 0 ? 0u : null,
            })],
            DeviceStates = new Dictionary<string, byte[]> { ["com1"] = [1, 2, 3], ["rootfs"] = new byte[r.Next(0, 5000)] },
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000 + seed),
        };
    }

    private static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();
    private static byte[]? Bytes<T>(T? value) where T : unmanaged => value is { } v ? Bytes(v) : null;

    [Fact]
    public void RoundTripKeepsEveryField()
    {
        Gen.Int[0, int.MaxValue].Sample(seed =>
        {
            var a = Synthetic(seed);
            var b = SnapshotFormat.Decode(SnapshotFormat.Encode(a), "mem");
            Assert.Equal(a.Config with { Devices = [] }, b.Config with { Devices = [] });
            Assert.Equal(a.Config.Devices, b.Config.Devices);
            Assert.Equal(a.CreatedAt, b.CreatedAt);
            Assert.Equal(Bytes(a.Vm.PicMaster), Bytes(b.Vm.PicMaster));
            Assert.Null(b.Vm.PicSlave);
            Assert.Equal(Bytes(a.Vm.Ioapic), Bytes(b.Vm.Ioapic));
            Assert.Equal(Bytes(a.Vm.Pit), Bytes(b.Vm.Pit));
            Assert.Equal(Bytes(a.Vm.Clock), Bytes(b.Vm.Clock));
            Assert.Equal(a.Vcpus.Count, b.Vcpus.Count);
            for (int i = 0; i < a.Vcpus.Count; i++)
            {
                var x = a.Vcpus[i];
                var y = b.Vcpus[i];
                Assert.Equal(MemoryMarshal.AsBytes(x.Cpuid.AsSpan()).ToArray(), MemoryMarshal.AsBytes(y.Cpuid.AsSpan()).ToArray());
                Assert.Equal(Bytes(x.Regs), Bytes(y.Regs));
                Assert.Equal(Bytes(x.Sregs), Bytes(y.Sregs));
                Assert.Equal(Bytes(x.Fpu), Bytes(y.Fpu));
                Assert.Equal(Bytes(x.Xsave), Bytes(y.Xsave));
                Assert.Equal(Bytes(x.Xcrs), Bytes(y.Xcrs));
                Assert.Equal(Bytes(x.DebugRegs), Bytes(y.DebugRegs));
                Assert.Equal(Bytes(x.Lapic), Bytes(y.Lapic));
                Assert.Equal(Bytes(x.Events), Bytes(y.Events));
                Assert.Equal(x.MpState, y.MpState);
                Assert.Equal(x.Msrs.Select(m => (m.index, m.data)), y.Msrs.Select(m => (m.index, m.data)));
            }
            Assert.Equal(a.DeviceStates.Keys.Order(), b.DeviceStates.Keys.Order());
            foreach (var (k, v) in a.DeviceStates) Assert.Equal(v, b.DeviceStates[k]);
        }, iter: 30);
    }

    [Fact]
    public void EveryTruncationIsRefused()
    {
        var file = SnapshotFormat.Encode(Synthetic(7, vcpus: 1));
        for (int length = 0; length < file.Length; length += length < 64 ? 1 : 97)
        {
            var e = Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode(file.AsSpan(0, length), "f"));
            Assert.Equal(SnapshotErrorReason.Truncated, e.Reason);
        }
    }

    [Fact]
    public void AnyFlippedContentBitFailsTheCrc()
    {
        var file = SnapshotFormat.Encode(Synthetic(3, vcpus: 1));
        Gen.Int[SnapshotFormat.HeaderLength, file.Length - 1].Select(Gen.Int[0, 7]).Sample((at, bit) =>
        {
            var copy = (byte[])file.Clone();
            copy[at] ^= (byte)(1 << bit);
            var e = Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode(copy, "f"));
            Assert.Equal(SnapshotErrorReason.ChecksumMismatch, e.Reason);
        }, iter: 200);
    }

    [Fact]
    public void HeaderProblemsHaveTheirOwnReasons()
    {
        var file = SnapshotFormat.Encode(Synthetic(5, vcpus: 1));
        var copy = (byte[])file.Clone();
        copy[8] = 2; // version
        Assert.Equal(SnapshotErrorReason.UnsupportedVersion, Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode(copy, "f")).Reason);
        copy = (byte[])file.Clone();
        copy[3] = (byte)'x'; // magic
        Assert.Equal(SnapshotErrorReason.Corrupt, Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode(copy, "f")).Reason);
        Assert.Equal(SnapshotErrorReason.Corrupt, Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode("hello, world, this is not a snapshot"u8, "f")).Reason);
        // Bytes appended after the content.
        Assert.Equal(SnapshotErrorReason.Corrupt, Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode([.. file, 0], "f")).Reason);
    }

    [Fact]
    public void GarbageWithAValidCrcIsCorruptNotACrash()
    {
        Gen.Byte.Array[0, 3000].Sample(content =>
        {
            var file = new byte[SnapshotFormat.HeaderLength + content.Length];
            "FIRESNAP"u8.CopyTo(file);
            BitConverter.TryWriteBytes(file.AsSpan(8), SnapshotFormat.Version);
            BitConverter.TryWriteBytes(file.AsSpan(12), (uint)SnapshotFormat.HeaderLength);
            BitConverter.TryWriteBytes(file.AsSpan(16), (ulong)content.Length);
            BitConverter.TryWriteBytes(file.AsSpan(24), System.IO.Hashing.Crc64.HashToUInt64(content));
            content.CopyTo(file, SnapshotFormat.HeaderLength);
            var e = Assert.Throws<SnapshotException>(() => SnapshotFormat.Decode(file, "f"));
            Assert.Equal(SnapshotErrorReason.Corrupt, e.Reason);
        }, iter: 300);
    }
}
