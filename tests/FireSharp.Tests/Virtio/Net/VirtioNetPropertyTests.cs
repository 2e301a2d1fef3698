using System.Buffers.Binary;
using CsCheck;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>
/// Random (mostly hostile) descriptor chains on the receive or the transmit queue. Whatever the chain, the
/// device's loop must not throw, and guest memory must not change anywhere but the used ring and (for receive)
/// the buffers the guest marked device-writable; a transmitted frame is never longer than the limit.
/// </summary>
public class VirtioNetPropertyTests
{
    public sealed record D(ulong Addr, uint Len, ushort Flags, ushort Next)
    {
        public override string ToString() => $"{Addr:x}/{Len:x}/{Flags}/{Next}";
    }

    private static readonly Gen<ulong> GenAddr = Gen.Frequency(
        (5, Gen.ULong[0x40000, NetRig.MemoryBytes - 1]),
        (1, Gen.ULong[0, 0x3FFF].Select(i => i * 16)),
        (1, Gen.OneOf(NetRig.MemoryBytes - 1, NetRig.MemoryBytes, 0xFFFF_FFFF_FFFF_FFF0UL)),
        (1, Gen.ULong));

    private static readonly Gen<uint> GenLen = Gen.Frequency(
        (5, Gen.UInt[0, 4096]),
        (2, Gen.OneOf(0u, 1u, 12u, 25u, 26u, 65562u, 65563u, 70000u)),
        (1, Gen.UInt));

    private static readonly Gen<D> GenDesc = Gen.Select(GenAddr, GenLen, Gen.UShort[0, 7], Gen.Frequency((4, Gen.UShort[0, 15]), (1, Gen.UShort)),
        (a, l, f, n) => new D(a, l, f, n));

    [Fact]
    public void Random_chains_never_throw_and_never_touch_memory_outside_the_chain()
    {
        Gen.Select(Gen.Int[0, 1], GenDesc.Array[1, 6], Gen.Int[0, 15], Gen.Int[14, 3000])
            .Sample((q, descs, head, frameBytes) =>
            {
                using var rig = new NetRig(NetOffloads.All);
                var mem = rig.Memory;
                // Canary over everything past the rings.
                var canary = mem.GetSpan(0x40000, (int)(NetRig.MemoryBytes - 0x40000));
                for (int i = 0; i < canary.Length; i++) canary[i] = (byte)(0xA5 ^ (i * 31));
                for (int i = 0; i < descs.Length; i++) rig.SetDesc(q, (head + i) % NetRig.QSize, descs[i].Addr, descs[i].Len, descs[i].Flags, descs[i].Next);

                // What the device may write: the used ring, and for receive every buffer marked writable (directly or in an indirect table).
                var allowed = new List<(ulong Start, ulong End)> { (NetRig.Used(q), NetRig.Used(q) + 0x1000) };
                if (q == 0)
                {
                    for (int i = 0; i < NetRig.QSize; i++)
                    {
                        var d = mem.GetSpan(NetRig.Desc(q) + (ulong)(16 * i), 16);
                        ulong a = BinaryPrimitives.ReadUInt64LittleEndian(d);
                        uint l = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
                        ushort f = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
                        if ((f & Virtqueue.DescFlagWrite) != 0) allowed.Add((a, a + l));
                        if ((f & Virtqueue.DescFlagIndirect) != 0 && a < NetRig.MemoryBytes)
                        {
                            for (ulong e = a; e + 16 <= Math.Min(a + l, NetRig.MemoryBytes); e += 16)
                            {
                                var x = mem.GetSpan(e, 16);
                                if ((BinaryPrimitives.ReadUInt16LittleEndian(x[12..]) & Virtqueue.DescFlagWrite) != 0)
                                {
                                    ulong xa = BinaryPrimitives.ReadUInt64LittleEndian(x);
                                    allowed.Add((xa, xa + BinaryPrimitives.ReadUInt32LittleEndian(x[8..])));
                                }
                            }
                        }
                    }
                }
                rig.Publish(q, head);
                var before = mem.GetSpan(0, (int)NetRig.MemoryBytes).ToArray();
                Mmio.Notify(rig.Transport, (uint)q);
                if (q == 0) rig.Peer.Send(NetRig.Frame(frameBytes, frameBytes));
                rig.Pump(); // must not throw

                var after = mem.GetSpan(0, (int)NetRig.MemoryBytes);
                for (int page = 0; page < before.Length; page += 4096)
                {
                    if (after.Slice(page, 4096).SequenceEqual(before.AsSpan(page, 4096))) continue;
                    for (int i = page; i < page + 4096; i++)
                    {
                        if (after[i] == before[i]) continue;
                        ulong addr = (ulong)i;
                        Assert.True(allowed.Any(r => addr >= r.Start && addr < r.End), $"byte 0x{addr:x} changed outside the chain's writable buffers");
                    }
                }
                if (q == 1 && rig.ReceiveFromGuest() is { } sent)
                    Assert.InRange(sent.Length, NetProtocol.MinFrameSize, NetProtocol.MaxFrameSize);
            }, iter: 150);
    }
}
