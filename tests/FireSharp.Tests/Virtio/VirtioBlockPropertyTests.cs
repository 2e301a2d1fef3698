using System.Buffers.Binary;
using CsCheck;
using FireSharp.Devices.Virtio;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio;

/// <summary>
/// Property tests of virtio-blk behind the transport. (1) Hostile: well-formed requests with random corruptions
/// of descriptors, indirect tables, the avail ring and headers; the device must never throw, must either
/// complete everything or set DEVICE_NEEDS_RESET, and must not change a single byte of guest memory outside
/// the used ring and the buffers the guest marked device-writable. (2) Model: random valid traffic against a
/// byte-array model of the disk, every status and every byte read checked.
/// </summary>
public class VirtioBlockPropertyTests
{
    private const ulong MemoryBytes = 512 * 1024;
    private const int DiskBytes = 64 * 1024; // 128 sectors
    private const ulong ControlEnd = FakeDriver.DataAddr;

    public sealed record Req(uint Type, ulong Sector, uint DataLength, int Segments, bool Indirect)
    {
        public override string ToString() => $"{Type}@{Sector}+{DataLength}/{Segments}{(Indirect ? "i" : "")}";
    }

    /// <summary>Kind 0: main-table descriptor; 1: indirect-area descriptor; 2: avail idx; 3: avail entry; 4: header bytes.</summary>
    public sealed record Mutation(int Kind, int Index, ulong Addr, uint Len, ushort Flags, ushort Next)
    {
        public override string ToString() => $"m{Kind}[{Index}]={Addr:x}/{Len:x}/{Flags}/{Next}";
    }

    private static readonly Gen<uint> GenType = Gen.Frequency(
        (6, Gen.OneOf(VirtioBlock.RequestIn, VirtioBlock.RequestOut)),
        (2, Gen.OneOf(VirtioBlock.RequestFlush, VirtioBlock.RequestGetId)),
        (1, Gen.UInt));

    private static readonly Gen<ulong> GenSector = Gen.Frequency(
        (6, Gen.ULong[0, 127]),
        (1, Gen.OneOf(126UL, 127UL, 128UL, 129UL, ulong.MaxValue, ulong.MaxValue / 512)),
        (1, Gen.ULong));

    private static readonly Gen<uint> GenDataLength = Gen.Frequency(
        (6, Gen.OneOf(512u, 1024u, 2048u, 4096u)),
        (2, Gen.OneOf(0u, 1u, 20u, 100u, 511u, 513u)),
        (1, Gen.UInt[0, 8192]));

    private static readonly Gen<Req> GenReq =
        Gen.Select(GenType, GenSector, GenDataLength, Gen.Int[1, 4], Gen.Bool, (t, s, l, n, i) => new Req(t, s, l, n, i));

    private static readonly Gen<ulong> GenAddr = Gen.Frequency(
        (4, Gen.ULong[ControlEnd, MemoryBytes - 1]),                         // somewhere in the buffer area
        (2, Gen.ULong[0, ControlEnd / 16 - 1].Select(i => i * 16)),          // the rings and tables (read-only targets)
        (1, Gen.OneOf(MemoryBytes - 1, MemoryBytes, 0xC000_0000UL, 0xFFFF_FFFF_FFFF_FFF0UL)),
        (1, Gen.ULong));

    private static readonly Gen<uint> GenLen = Gen.Frequency(
        (4, Gen.UInt[0, 4096]),
        (1, Gen.OneOf(0u, 1u, 15u, 16u, 17u, 4096u * 17, 0x8000_0000u, 0xFFFF_FFFFu)),
        (1, Gen.UInt));

    private static readonly Gen<Mutation> GenMutation =
        Gen.Select(Gen.Int[0, 4], Gen.Int[0, 300], GenAddr, GenLen, Gen.Frequency((3, Gen.UShort[0, 7]), (1, Gen.UShort)),
            Gen.Frequency((3, Gen.UShort[0, 20]), (1, Gen.UShort)),
            (k, i, a, l, f, n) => new Mutation(k, i, a, l, f, n));

    private static readonly Gen<ulong> GenFeatures = Gen.OneOf(
        VirtioFeatures.Transport, VirtioFeatures.Version1, VirtioFeatures.Version1 | VirtioFeatures.EventIdx,
        VirtioFeatures.Version1 | VirtioFeatures.IndirectDesc);

    [Fact]
    public void HostileChainsNeverEscapeTheBuffersTheGuestNamed()
    {
        Gen.Select(Gen.Int[0, 8], GenFeatures, Gen.Bool, GenReq.Array[1, 12], GenMutation.Array[0, 6])
            .Sample((sizeExp, features, readOnly, reqs, mutations) =>
            {
                ushort size = (ushort)(1 << sizeExp);
                using var rig = new BlockRig(DiskBytes, readOnly, size, features, serial: "prop", memoryBytes: MemoryBytes);
                var mem = rig.Memory;
                // Canary: every byte of RAM not yet written gets a pattern the device has no reason to produce.
                for (ulong a = ControlEnd; a < MemoryBytes; a += 4096)
                    mem.GetSpan(a, 4096).Fill(0xA5);
                foreach (var r in reqs)
                {
                    var req = rig.Driver.AddBlockRequest(r.Type, r.Sector, r.DataLength, r.Indirect && (features & VirtioFeatures.IndirectDesc) != 0, r.Segments);
                    if (r.Type == VirtioBlock.RequestOut) req.FillData(mem, new byte[r.DataLength]);
                }
                foreach (var m in mutations) Apply(rig.Driver, m);
                Sanitize(mem);

                var before = Snapshot(mem);
                var diskBefore = rig.Backend.Data.ToArray();
                var allowed = WritableRanges(mem, size);

                rig.Notify();
                rig.Notify(); // a second notify with nothing new is harmless

                var after = Snapshot(mem);
                for (int page = 0; page < (int)MemoryBytes; page += 4096)
                {
                    if (before.AsSpan(page, 4096).SequenceEqual(after.AsSpan(page, 4096))) continue;
                    for (int i = page; i < page + 4096; i++)
                    {
                        if (before[i] == after[i] || IsAllowed(allowed, (ulong)i)) continue;
                        Assert.Fail($"byte 0x{i:x} changed ({before[i]:x2} -> {after[i]:x2}) outside every buffer the guest named");
                    }
                }
                System.Buffers.ArrayPool<byte>.Shared.Return(before);
                System.Buffers.ArrayPool<byte>.Shared.Return(after);
                Assert.DoesNotContain(rig.Logger.Entries, e => e.Id.Id == 4005); // a device exception is a bug
                if (readOnly) Assert.Equal(diskBefore, rig.Backend.Data);
                if (!rig.Transport.NeedsReset)
                {
                    Assert.Equal(rig.Driver.AvailIdx, rig.Driver.UsedIdx);
                    for (int i = 0; i < rig.Driver.UsedIdx; i++) Assert.True(rig.Driver.Used(i).Id < size);
                }
                else
                {
                    Assert.NotNull(rig.Transport.Queues[0].BrokenReason);
                    Assert.NotEqual(0u, rig.Transport.InterruptStatus & VirtioInterrupt.ConfigChange);
                }
            }, iter: 3000);
    }

    private static void Apply(FakeDriver d, Mutation m)
    {
        var mem = d.Memory;
        switch (m.Kind)
        {
            case 0:
                d.SetDescriptor(m.Index % d.Size, m.Addr, m.Len, m.Flags, m.Next);
                break;
            case 1:
                d.SetDescriptor(FakeDriver.IndirectAddr, m.Index, m.Addr, m.Len, m.Flags, m.Next);
                break;
            case 2:
                d.SetAvailIdx((ushort)(d.AvailIdx + (short)m.Next - 10));
                break;
            case 3:
                mem.Write<ushort>(FakeDriver.AvailAddr + 4 + 2 * (ulong)(m.Index % d.Size), m.Next);
                break;
            default:
                // Scribble on a header: requests' headers are the first buffers allocated after each other.
                ulong at = FakeDriver.DataAddr + (ulong)(m.Index * 16) % 0x4000;
                mem.Write(at, (uint)m.Addr);
                break;
        }
    }

    /// <summary>
    /// Keeps the test's own bookkeeping sound, as one more deterministic corruption. The device must never
    /// rewrite a descriptor (else the set of named buffers would change while it runs), so: a device-writable
    /// buffer may not start in the control area, and an indirect table must be 16-byte aligned in the control
    /// area but not in the used ring (which the device writes), or lie outside RAM. Descriptors are read at
    /// every 16-byte boundary of the control area, since a hostile indirect pointer can aim at any of them.
    /// </summary>
    private static void Sanitize(GuestMemory mem)
    {
        for (ulong o = 0; o + 16 <= ControlEnd; o += 16)
        {
            var d = mem.GetSpan(o, 16);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            if ((flags & Virtqueue.DescFlagWrite) != 0 && addr < ControlEnd)
                flags &= unchecked((ushort)~Virtqueue.DescFlagWrite);
            bool badTable = (addr >= ControlEnd && addr < MemoryBytes) || addr % 16 != 0
                || (addr >= FakeDriver.UsedAddr && addr < FakeDriver.IndirectAddr);
            if ((flags & Virtqueue.DescFlagIndirect) != 0 && badTable)
                flags &= unchecked((ushort)~Virtqueue.DescFlagIndirect);
            BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        }
    }

    /// <summary>Every range a descriptor anywhere in the control area names as device-writable, plus the used ring.</summary>
    private static List<(ulong Start, ulong End)> WritableRanges(GuestMemory mem, ushort size)
    {
        var ranges = new List<(ulong, ulong)> { (FakeDriver.UsedAddr, FakeDriver.UsedAddr + 6 + 8 * (ulong)size) };
        for (ulong o = 0; o + 16 <= ControlEnd; o += 16)
        {
            var d = mem.GetSpan(o, 16);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            if ((flags & Virtqueue.DescFlagWrite) == 0 || len == 0 || addr >= MemoryBytes) continue;
            ranges.Add((addr, Math.Min(MemoryBytes, addr + Math.Min(len, MemoryBytes))));
        }
        return ranges;
    }

    private static bool IsAllowed(List<(ulong Start, ulong End)> ranges, ulong address)
    {
        foreach (var (s, e) in ranges) if (address >= s && address < e) return true;
        return false;
    }

    private static byte[] Snapshot(GuestMemory mem)
    {
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent((int)MemoryBytes);
        mem.Read(0, copy.AsSpan(0, (int)MemoryBytes));
        return copy;
    }

    [Fact]
    public void ValidTrafficMatchesADiskModel()
    {
        Gen.Select(Gen.Int[3, 8], GenFeatures, Gen.Bool, Gen.Select(GenReq, Gen.Byte).Array[1, 6].Array[1, 6])
            .Sample((sizeExp, features, readOnly, batches) =>
            {
                ushort size = (ushort)(1 << sizeExp);
                using var rig = new BlockRig(DiskBytes, readOnly, size, features, serial: "model-0123456789abcd", memoryBytes: MemoryBytes);
                var model = rig.Backend.Data.ToArray();
                foreach (var batch in batches)
                {
                    var sent = new List<(Req Req, BlockRequest Handle, byte[] Payload)>();
                    foreach (var (r0, fill) in batch)
                    {
                        // Keep it within what a correct driver may have in flight: ≤ size descriptors.
                        var r = r0 with { Indirect = r0.Indirect && (features & VirtioFeatures.IndirectDesc) != 0 };
                        int descriptors = r.Indirect ? 1 : r.Segments + 2;
                        if (sent.Sum(s => s.Req.Indirect ? 1 : s.Req.Segments + 2) + descriptors > size) break;
                        var h = rig.Driver.AddBlockRequest(r.Type, r.Sector, r.DataLength, r.Indirect, r.Segments);
                        var payload = Enumerable.Range(0, (int)r.DataLength).Select(i => (byte)(fill + i)).ToArray();
                        if (r.Type == VirtioBlock.RequestOut) h.FillData(rig.Memory, payload);
                        sent.Add((r, h, payload));
                    }
                    rig.Notify();
                    Assert.False(rig.Transport.NeedsReset, rig.Transport.Queues[0].BrokenReason);
                    Assert.Equal(rig.Driver.AvailIdx, rig.Driver.UsedIdx);

                    foreach (var (r, h, payload) in sent)
                    {
                        byte expected = Expected(r, readOnly);
                        Assert.Equal(expected, h.Status(rig.Memory));
                        if (expected != VirtioBlock.StatusOk) continue;
                        if (r.Type == VirtioBlock.RequestOut)
                            payload.CopyTo(model, (int)r.Sector * 512);
                        else if (r.Type == VirtioBlock.RequestIn)
                            Assert.Equal(model.AsSpan((int)r.Sector * 512, (int)r.DataLength).ToArray(), h.ReadData(rig.Memory));
                        else if (r.Type == VirtioBlock.RequestGetId)
                            Assert.Equal("model-0123456789abcd"u8[..Math.Min(20, (int)r.DataLength)].ToArray(), h.ReadData(rig.Memory)[..Math.Min(20, (int)r.DataLength)]);
                    }
                }
                Assert.Equal(model, rig.Backend.Data);
            }, iter: 500);
    }

    private static byte Expected(Req r, bool readOnly)
    {
        switch (r.Type)
        {
            case VirtioBlock.RequestIn:
            case VirtioBlock.RequestOut:
                if (r.Type == VirtioBlock.RequestOut && readOnly) return VirtioBlock.StatusIoErr;
                if (r.DataLength % 512 != 0) return VirtioBlock.StatusIoErr;
                if (r.Sector > DiskBytes / 512 || r.DataLength / 512 > DiskBytes / 512 - r.Sector) return VirtioBlock.StatusIoErr;
                return VirtioBlock.StatusOk;
            case VirtioBlock.RequestFlush:
            case VirtioBlock.RequestGetId:
                return VirtioBlock.StatusOk;
            default:
                return VirtioBlock.StatusUnsupported;
        }
    }

    [Fact]
    public void RandomRegisterTrafficNeverThrowsAndResetAlwaysRecovers()
    {
        var op = Gen.Select(Gen.Frequency((3, Gen.UInt[0, 0x40].Select(i => i * 4)), (1, Gen.UInt[0, 0x1ff])),
            Gen.Frequency((3, Gen.UInt[0, 300]), (1, Gen.UInt)), Gen.OneOf(1, 2, 4, 8), Gen.Bool);
        op.Array[1, 60].Sample(ops =>
        {
            using var rig = new BlockRig(size: 8, bringup: false);
            var t = rig.Transport;
            Span<byte> buf = stackalloc byte[8];
            foreach (var (offset, value, width, write) in ops)
            {
                var data = buf[..width];
                if (write)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(buf, value);
                    t.Write(offset, data);
                }
                else t.Read(offset, data);
            }
            Assert.DoesNotContain(rig.Logger.Entries, e => e.Id.Id == 4005);
            // Whatever state the garbage left, a reset and a proper bring-up give a working device.
            rig.Memory.Clear(0, (int)FakeDriver.DataAddr);
            Mmio.Bringup(t, 8);
            var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 1, 512);
            rig.Notify();
            Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        }, iter: 2000);
    }
}
