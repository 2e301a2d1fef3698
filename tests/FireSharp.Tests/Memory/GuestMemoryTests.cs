using CsCheck;
using FireSharp.Memory;

namespace FireSharp.Tests.Memory;

public class GuestMemoryTests
{
    [Fact]
    public void SmallGuestIsOneRegionFromZero()
    {
        using var mem = GuestMemory.CreateAnonymous(16 * MemoryLayout.MiB);
        var r = Assert.Single(mem.Regions);
        Assert.Equal(0UL, r.GuestAddress);
        Assert.Equal(16 * MemoryLayout.MiB, mem.TotalSize);
    }

    [Fact]
    public void LargeGuestIsSplitAroundTheMmioGap()
    {
        using var mem = GuestMemory.CreateAnonymous(4 * MemoryLayout.GiB); // MAP_NORESERVE: costs nothing until touched
        Assert.Equal(2, mem.Regions.Count);
        Assert.Equal(MemoryLayout.MmioGapStart, mem.Regions[0].Size);
        Assert.Equal(MemoryLayout.MmioGapEnd, mem.Regions[1].GuestAddress);
        Assert.Equal(1 * MemoryLayout.GiB, mem.Regions[1].Size);
        Assert.False(mem.Contains(MemoryLayout.MmioGapStart, 1));
        Assert.True(mem.Contains(MemoryLayout.MmioGapEnd, 8));
        // An access straddling the end of low RAM and the gap is refused, not split.
        Assert.Throws<GuestMemoryException>(() => mem.GetSpan(MemoryLayout.MmioGapStart - 4, 8));
        mem.Write(MemoryLayout.MmioGapEnd + 16, 0x1122334455667788UL);
        Assert.Equal(0x1122334455667788UL, mem.Read<ulong>(MemoryLayout.MmioGapEnd + 16));
    }

    [Fact]
    public void A_mapping_the_host_refuses_is_a_GuestMemoryMapException_with_its_errno()
    {
        // 1 PiB is more than a process's 128 TiB of address space: mmap fails with ENOMEM (even with MAP_NORESERVE).
        // The worker maps that errno to RESOURCE_EXHAUSTED; an OutOfMemoryException (what this threw before) is the
        // runtime's own and escaped the worker's request handler.
        var e = Assert.Throws<GuestMemoryMapException>(() => GuestMemory.CreateAnonymous(1UL << 50));
        Assert.Equal(FireSharp.Kvm.Interop.Errno.ENOMEM, e.Errno);
    }

    [Fact]
    public void ReadsAndWritesRoundTrip()
    {
        using var mem = GuestMemory.CreateAnonymous(MemoryLayout.MiB);
        mem.Write(0x1234, (uint)0xdeadbeef);
        Assert.Equal(0xdeadbeefu, mem.Read<uint>(0x1234));
        mem.Write(0x2000, new byte[] { 1, 2, 3 });
        var buf = new byte[3];
        mem.Read(0x2000, buf);
        Assert.Equal(new byte[] { 1, 2, 3 }, buf);
        mem.Clear(0x2000, 3);
        Assert.Equal(0, mem.Read<byte>(0x2001));
    }

    [Fact]
    public void AfterDisposalEveryAccessorThrowsInsteadOfTouchingUnmappedMemory()
    {
        var mem = GuestMemory.CreateAnonymous(MemoryLayout.MiB);
        mem.Write(0x1000, 7UL);
        mem.Dispose();
        Assert.True(mem.IsDisposed);
        // The ones that only hand out a span first: before the fix they returned one into the unmapped range.
        Assert.Throws<ObjectDisposedException>(() => mem.GetReadOnlySpan(0x1000, 8).Length);
        Assert.Throws<ObjectDisposedException>(() => mem.TryGetSpan(0x1000, 8, out _));
        Assert.Throws<ObjectDisposedException>(() => mem.GetSpan(0x1000, 8).Length);
        Assert.Throws<ObjectDisposedException>(() => mem.Read<ulong>(0x1000));
        Assert.Throws<ObjectDisposedException>(() => mem.Write(0x1000, 1UL));
        Assert.Throws<ObjectDisposedException>(() => mem.Read(0x1000, new byte[8]));
        Assert.Throws<ObjectDisposedException>(() => mem.Clear(0x1000, 8));
        mem.Dispose(); // twice is harmless
    }

    [Theory]
    [InlineData(0x100000UL, 1)]             // one past the end
    [InlineData(0xFFFFFUL, 2)]              // straddles the end
    [InlineData(ulong.MaxValue, 1)]         // wraps
    [InlineData(ulong.MaxValue - 2, 8)]     // gpa + length overflows
    [InlineData(0x10UL, int.MaxValue)]      // huge length
    public void OutOfRangeAccessIsAnErrorNotAHostAccess(ulong gpa, int length)
    {
        using var mem = GuestMemory.CreateAnonymous(MemoryLayout.MiB);
        Assert.False(mem.TryGetSpan(gpa, length, out _));
        var e = Assert.Throws<GuestMemoryException>(() => mem.GetSpan(gpa, length));
        Assert.Equal(gpa, e.Gpa);
        if (length <= 16) Assert.Throws<GuestMemoryException>(() => mem.Write(gpa, new byte[length]));
    }

    [Fact]
    public void NegativeLengthIsRefused()
    {
        using var mem = GuestMemory.CreateAnonymous(MemoryLayout.MiB);
        Assert.False(mem.TryGetSpan(0, -1, out _));
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(4095UL)]
    public void InvalidSizesAreRefused(ulong size) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => GuestMemory.CreateAnonymous(size));

    [Fact]
    public void AnyRangeIsEitherWhollyInsideOrRefused()
    {
        const ulong size = 2 * MemoryLayout.MiB;
        using var mem = GuestMemory.CreateAnonymous(size);
        Gen.Select(Gen.OneOf(Gen.ULong[0, size + 8192], Gen.ULong), Gen.Int[0, 70_000]).Sample((gpa, len) =>
        {
            bool inside = gpa <= size && (ulong)len <= size - gpa;
            return mem.TryGetSpan(gpa, len, out var span) == inside && (!inside || span.Length == len);
        });
    }
}
