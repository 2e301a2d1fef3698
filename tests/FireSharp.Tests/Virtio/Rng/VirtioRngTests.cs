using CsCheck;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio.Rng;

/// <summary>A virtio-rng device behind a live transport and a fake driver (queue 0 at the fake driver's layout), processed inline.</summary>
internal sealed class RngRig : IDisposable
{
    public RngRig(ushort size = 16, IEntropyRateLimiter? limiter = null, ulong memoryBytes = 1024 * 1024, ulong features = VirtioFeatures.Transport,
        FireSharp.Devices.RateLimiting.RateLimiter? tokens = null)
    {
        Memory = GuestMemory.CreateAnonymous(memoryBytes);
        Rng = new VirtioRng(limiter, Logger, rateLimiter: tokens);
        Irq = new Tests.Devices.FakeInterruptLine();
        Transport = new VirtioMmioTransport(Rng, Memory, Irq, Logger);
        Driver = new FakeDriver(Memory, size);
        Mmio.Bringup(Transport, size, features);
    }

    public GuestMemory Memory { get; }
    public VirtioRng Rng { get; }
    public Tests.Devices.FakeInterruptLine Irq { get; }
    public VirtioMmioTransport Transport { get; }
    public FakeDriver Driver { get; }
    public ListLogger Logger { get; } = new();

    public void Notify() => Mmio.Notify(Transport);

    public void Dispose() => Memory.Dispose();
}

/// <summary>A limiter that refuses until told otherwise, and remembers how to wake the device.</summary>
internal sealed class GateLimiter : IEntropyRateLimiter
{
    public bool Open { get; set; }
    public List<int> Asked { get; } = [];
    public Action? Retry { get; private set; }

    public bool TryAcquire(int bytes, Action retry)
    {
        Asked.Add(bytes);
        Retry = retry;
        return Open;
    }
}

/// <summary>virtio-rng without KVM: what it serves, and what a hostile driver cannot make it do.</summary>
public class VirtioRngTests
{
    private const byte Canary = 0xA5;

    private static void Fill(GuestMemory m, ulong at, int length) => m.GetSpan(at, length).Fill(Canary);

    [Fact]
    public void IdentifiesAsAnEntropyDeviceWithOneQueueAndNoFeatures()
    {
        using var rig = new RngRig();
        Assert.Equal(4u, Mmio.R32(rig.Transport, VirtioMmioRegister.DeviceId));
        Assert.Single(rig.Transport.Queues);
        Assert.Equal(0UL, rig.Rng.DeviceFeatures);
        Span<byte> config = stackalloc byte[8];
        config.Fill(0xFF);
        rig.Rng.ReadConfig(0, config);
        Assert.Equal(new byte[8], config.ToArray()); // no config space
    }

    [Fact]
    public void FillsEveryWritableBufferOfARequestWithFreshRandomBytes()
    {
        using var rig = new RngRig();
        var m = rig.Memory;
        ulong a = rig.Driver.Alloc(64), b1 = rig.Driver.Alloc(100), b2 = rig.Driver.Alloc(200), b3 = rig.Driver.Alloc(50), after = rig.Driver.Alloc(64);
        foreach (var (at, len) in new[] { (a, 64), (b1, 100), (b2, 200), (b3, 50), (after, 64) }) Fill(m, at, len);
        rig.Driver.AddChain(new Buf(a, 64, true));
        rig.Driver.AddChain(new Buf(b1, 100, true), new Buf(b2, 200, true), new Buf(b3, 50, true));
        rig.Notify();

        Assert.Equal(2, rig.Driver.UsedIdx);
        Assert.Equal(64u, rig.Driver.Used(0).Len);
        Assert.Equal(350u, rig.Driver.Used(1).Len);
        var first = new byte[64];
        m.Read(a, first);
        var second = new byte[350];
        m.Read(b1, second.AsSpan(0, 100));
        m.Read(b2, second.AsSpan(100, 200));
        m.Read(b3, second.AsSpan(300, 50));
        // 64 random bytes all equal to the canary, or the two requests alike, happen with probability ~2^-512.
        Assert.Contains(first, x => x != Canary);
        Assert.Contains(second, x => x != Canary);
        Assert.NotEqual(first, second.AsSpan(0, 64).ToArray());
        var untouched = new byte[64];
        m.Read(after, untouched);
        Assert.All(untouched, x => Assert.Equal(Canary, x)); // nothing beyond the buffers named
        Assert.True(rig.Irq.Pulses >= 1);
        Assert.Equal((2L, 414L, 0L, 0L), rig.Rng.Counters);
    }

    [Fact]
    public void ARequestWithDeviceReadableBuffersIsReturnedUnusedAndLoggedOnce()
    {
        using var rig = new RngRig();
        var m = rig.Memory;
        ulong r = rig.Driver.Alloc(16), w = rig.Driver.Alloc(32), r2 = rig.Driver.Alloc(16), good = rig.Driver.Alloc(32);
        foreach (var at in new[] { r, w, r2, good }) Fill(m, at, 32);
        rig.Driver.AddChain(new Buf(r, 16, false), new Buf(w, 32, true)); // readable part first: malformed for entropy
        rig.Driver.AddChain(new Buf(r2, 16, false));                      // nothing writable at all
        rig.Driver.AddChain(new Buf(good, 32, true));
        rig.Notify();

        Assert.Equal(3, rig.Driver.UsedIdx);
        Assert.Equal(0u, rig.Driver.Used(0).Len);
        Assert.Equal(0u, rig.Driver.Used(1).Len);
        Assert.Equal(32u, rig.Driver.Used(2).Len);
        var bytes = new byte[32];
        m.Read(w, bytes);
        Assert.All(bytes, x => Assert.Equal(Canary, x)); // the malformed request's writable part was not filled
        Assert.Single(rig.Logger.Entries, e => e.Id.Id == 4400);
        Assert.Equal(2L, rig.Rng.Counters.Malformed);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void AHugeRequestCostsAtMostMaxBytesPerRequest()
    {
        using var rig = new RngRig(size: 32, memoryBytes: 2 * 1024 * 1024);
        // 24 descriptors naming the same 1 MiB: 24 MiB of writable space in one chain.
        const uint OneMiB = 1024 * 1024;
        ulong region = rig.Driver.Alloc(OneMiB);
        Fill(rig.Memory, region, (int)OneMiB);
        rig.Driver.AddChain([.. Enumerable.Repeat(new Buf(region, OneMiB, true), 24)]);
        rig.Notify();

        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal((uint)VirtioRng.MaxBytesPerRequest, rig.Driver.Used(0).Len);
        var tail = new byte[OneMiB - VirtioRng.MaxBytesPerRequest];
        rig.Memory.Read(region + VirtioRng.MaxBytesPerRequest, tail);
        Assert.All(tail, x => Assert.Equal(Canary, x));
    }

    [Fact]
    public void ADescriptorLoopBreaksTheQueueNotTheHost()
    {
        using var rig = new RngRig();
        ulong buf = rig.Driver.Alloc(16);
        rig.Driver.SetDescriptor(0, buf, 16, Virtqueue.DescFlagWrite | Virtqueue.DescFlagNext, 1);
        rig.Driver.SetDescriptor(1, buf, 16, Virtqueue.DescFlagWrite | Virtqueue.DescFlagNext, 0);
        rig.Driver.Publish(0);
        rig.Notify();

        Assert.Equal(0, rig.Driver.UsedIdx);
        Assert.True(rig.Transport.NeedsReset);
        Assert.Contains("loop", rig.Transport.Queues[0].BrokenReason);
        Assert.DoesNotContain(rig.Logger.Entries, e => e.Id.Id == 4005); // not a device fault
    }

    [Fact]
    public void TheRateLimiterDefersARequestWithoutLosingIt()
    {
        var limiter = new GateLimiter();
        using var rig = new RngRig(limiter: limiter);
        ulong small = rig.Driver.Alloc(48), large = rig.Driver.Alloc(128 * 1024);
        Fill(rig.Memory, small, 48);
        rig.Driver.AddChain(new Buf(small, 48, true));
        rig.Driver.AddChain(new Buf(large, 128 * 1024, true));
        rig.Notify();

        // Refused: nothing served, nothing written, the chain still in the ring.
        Assert.Equal(0, rig.Driver.UsedIdx);
        Assert.Equal([48], limiter.Asked);
        Assert.Equal(1L, rig.Rng.Counters.Deferred);
        var bytes = new byte[48];
        rig.Memory.Read(small, bytes);
        Assert.All(bytes, x => Assert.Equal(Canary, x));
        Assert.Equal(0, rig.Irq.Pulses);

        // A notification while still refused changes nothing either.
        rig.Notify();
        Assert.Equal(0, rig.Driver.UsedIdx);

        // The limiter's budget is back: its retry runs the queue again (here inline; in a VM on the device's thread).
        limiter.Open = true;
        limiter.Retry!();
        Assert.Equal(2, rig.Driver.UsedIdx);
        Assert.Equal((0u, 48u), rig.Driver.Used(0));
        Assert.Equal((1u, (uint)VirtioRng.MaxBytesPerRequest), rig.Driver.Used(1));
        Assert.Equal([48, 48, 48, VirtioRng.MaxBytesPerRequest], limiter.Asked); // the limiter sees what is served, capped
    }

    [Fact]
    public void StateIsAFormatByteAndItsLimiterAndAnythingElseIsRefused()
    {
        using var rig = new RngRig();
        Assert.Equal(new byte[] { 2, 0, 0 }, rig.Rng.SaveState()); // format 2, no bandwidth bucket, no ops bucket
        rig.Rng.RestoreState([2, 0, 0]);
        rig.Rng.RestoreState([1]);                                  // format 1 (before rate limiters)
        Assert.Throws<InvalidDataException>(() => rig.Rng.RestoreState([2]));
        Assert.Throws<InvalidDataException>(() => rig.Rng.RestoreState([2, 0, 0, 0]));
        Assert.Throws<InvalidDataException>(() => rig.Rng.RestoreState([3, 0, 0]));
        Assert.Throws<InvalidDataException>(() => rig.Rng.RestoreState([1, 0]));
        Assert.Throws<InvalidDataException>(() => rig.Rng.RestoreState([]));

        // The transport carries it: a fresh device restores the ring and serves the next request.
        ulong buf = rig.Driver.Alloc(16);
        rig.Driver.AddChain(new Buf(buf, 16, true));
        rig.Notify();
        using var copy = new RngRig();
        copy.Transport.RestoreState(rig.Transport.SaveState());
        Assert.Equal(rig.Transport.SaveState(), copy.Transport.SaveState());
    }

    private const ulong PropertyMemory = 256 * 1024;

    /// <summary>One descriptor a hostile driver writes: where, how long, which flags, which next.</summary>
    public sealed record Desc(ulong Addr, uint Len, ushort Flags, ushort Next)
    {
        public override string ToString() => $"{Addr:x}/{Len:x}/{Flags}/{Next}";
    }

    private static readonly Gen<ulong> GenAddr = Gen.Frequency(
        (6, Gen.ULong[FakeDriver.DataAddr, PropertyMemory - 1]),
        (1, Gen.OneOf(FakeDriver.IndirectAddr, FakeDriver.IndirectAddr + 16, PropertyMemory - 1, PropertyMemory, 0xFFFF_FFFF_FFFF_FFF0UL)),
        (1, Gen.ULong));

    private static readonly Gen<uint> GenLen = Gen.Frequency(
        (4, Gen.UInt[0, 8192]),
        (1, Gen.OneOf(0u, 1u, 65535u, 65536u, 65537u, 200_000u, 0x8000_0000u, 0xFFFF_FFFFu)),
        (1, Gen.UInt));

    private static readonly Gen<ushort> GenFlags = Gen.OneOf<ushort>(
        0, Virtqueue.DescFlagWrite, Virtqueue.DescFlagNext, Virtqueue.DescFlagWrite | Virtqueue.DescFlagNext, Virtqueue.DescFlagIndirect);

    private static readonly Gen<Desc> GenDesc = Gen.Select(GenAddr, GenLen, GenFlags, Gen.Frequency((4, Gen.UShort[0, 17]), (1, Gen.UShort)),
        (a, l, f, n) => new Desc(a, l, f, n));

    /// <summary>
    /// Random descriptor tables (main and indirect), heads and avail indices: the device never throws, serves at
    /// most <see cref="VirtioRng.MaxBytesPerRequest"/> per request and never more than the chain offers, writes only
    /// inside buffers the driver marked device-writable (and the used ring), and either serves everything or sets
    /// DEVICE_NEEDS_RESET.
    /// </summary>
    [Fact]
    public void HostileChainsNeverCrashAndStayBounded()
    {
        Gen.Select(Gen.Int[0, 5], GenDesc.Array[16], GenDesc.Array[8], Gen.UShort[0, 40].Array[1, 8], Gen.Bool)
            .Sample((sizeExp, table, indirect, heads, indirectFeature) =>
            {
                ushort size = (ushort)(1 << sizeExp);
                ulong features = indirectFeature ? VirtioFeatures.Transport : VirtioFeatures.Version1;
                using var rig = new RngRig(size, memoryBytes: PropertyMemory, features: features);
                var mem = rig.Memory;
                for (ulong a = FakeDriver.DataAddr; a < PropertyMemory; a += 4096) mem.GetSpan(a, 4096).Fill(Canary);
                // The test's bookkeeping stays sound: indirect tables only at the indirect area, and no writable buffer in
                // the control area (the device would rewrite descriptors the test reads its expectations from).
                static Desc Sane(Desc d, bool inIndirect)
                {
                    if ((d.Flags & Virtqueue.DescFlagIndirect) != 0)
                        return inIndirect ? d with { Flags = 0 } : d with { Addr = FakeDriver.IndirectAddr };
                    return (d.Flags & Virtqueue.DescFlagWrite) != 0 && d.Addr < FakeDriver.DataAddr ? d with { Flags = (ushort)(d.Flags & ~Virtqueue.DescFlagWrite) } : d;
                }
                var main = table.Take(size).Select(d => Sane(d, false)).ToList();
                var inner = indirect.Select(d => Sane(d, true)).ToList();
                for (int i = 0; i < main.Count; i++) rig.Driver.SetDescriptor(i, main[i].Addr, main[i].Len, main[i].Flags, main[i].Next);
                for (int i = 0; i < inner.Count; i++) rig.Driver.SetDescriptor(FakeDriver.IndirectAddr, i, inner[i].Addr, inner[i].Len, inner[i].Flags, inner[i].Next);
                foreach (var h in heads) rig.Driver.Publish(h);
                var allowed = new List<(ulong Start, ulong End)> { (FakeDriver.UsedAddr, FakeDriver.UsedAddr + 8 + 8 * (ulong)size) };
                foreach (var d in main.Concat(inner))
                    if ((d.Flags & Virtqueue.DescFlagWrite) != 0 && d.Addr < PropertyMemory)
                        allowed.Add((d.Addr, d.Addr + Math.Min(d.Len, PropertyMemory)));
                var before = new byte[PropertyMemory];
                mem.Read(0, before);

                rig.Notify();

                var after = new byte[PropertyMemory];
                mem.Read(0, after);
                for (int i = 0; i < before.Length; i++)
                {
                    if (before[i] == after[i] || allowed.Any(r => (ulong)i >= r.Start && (ulong)i < r.End)) continue;
                    Assert.Fail($"byte 0x{i:x} changed outside every buffer the driver marked writable");
                }
                Assert.DoesNotContain(rig.Logger.Entries, e => e.Id.Id == 4005);
                for (int i = 0; i < rig.Driver.UsedIdx; i++) Assert.InRange(rig.Driver.Used(i).Len, 0u, (uint)VirtioRng.MaxBytesPerRequest);
                if (!rig.Transport.NeedsReset) Assert.Equal(rig.Driver.AvailIdx, rig.Driver.UsedIdx);
            }, iter: 500);
    }
}
