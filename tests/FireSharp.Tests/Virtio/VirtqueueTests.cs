using FireSharp.Devices.Virtio;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio;

/// <summary>The split virtqueue's validation, one hostile shape at a time.</summary>
public sealed class VirtqueueTests : IDisposable
{
    private const ushort Next = Virtqueue.DescFlagNext, Write = Virtqueue.DescFlagWrite, Indirect = Virtqueue.DescFlagIndirect;
    private readonly GuestMemory _memory = GuestMemory.CreateAnonymous(1024 * 1024);
    private readonly FakeDriver _driver;
    private readonly Virtqueue _queue = new(256);

    public VirtqueueTests()
    {
        _driver = new FakeDriver(_memory, 8);
        _queue.Size = 8;
        _queue.DescTable = FakeDriver.DescAddr;
        _queue.AvailRing = FakeDriver.AvailAddr;
        _queue.UsedRing = FakeDriver.UsedAddr;
        _queue.IndirectDesc = true;
        _queue.Ready = true;
        Assert.True(_queue.ValidateLayout(_memory));
    }

    public void Dispose() => _memory.Dispose();

    private string Broken()
    {
        Assert.Equal(PopResult.Broken, _queue.TryPop(_memory, out _));
        Assert.NotNull(_queue.BrokenReason);
        // Stays broken: no further processing until reset.
        Assert.Equal(PopResult.Broken, _queue.TryPop(_memory, out _));
        return _queue.BrokenReason!;
    }

    [Fact]
    public void ADirectChainIsReturnedWithItsSegmentsAndLengths()
    {
        ushort head = _driver.AddChain(new Buf(0x10000, 16, false), new Buf(0x11000, 4096, true), new Buf(0x12000, 1, true));
        Assert.Equal(PopResult.Chain, _queue.TryPop(_memory, out var chain));
        Assert.Equal(head, chain.Head);
        Assert.Equal(3, chain.Count);
        Assert.Equal(1, chain.FirstWritable);
        Assert.Equal(16UL, chain.ReadableLength);
        Assert.Equal(4097UL, chain.WritableLength);
        Assert.Equal(new DescriptorSegment(0x11000, 4096, true), chain.Segments[1]);
        Assert.Equal(PopResult.Empty, _queue.TryPop(_memory, out _));
    }

    [Fact]
    public void DirectDescriptorsFollowedByAnIndirectTableAreFlattened()
    {
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, 0x11000, 512, Next | Write, 1);
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 1, 0x12000, 1, Write, 0);
        _driver.SetDescriptor(0, 0x10000, 16, Next, 5);
        _driver.SetDescriptor(5, FakeDriver.IndirectAddr, 32, Indirect | Write, 0); // WRITE on the pointer is ignored
        _driver.Publish(0);
        Assert.Equal(PopResult.Chain, _queue.TryPop(_memory, out var chain));
        Assert.Equal(3, chain.Count);
        Assert.Equal(513UL, chain.WritableLength);
        Assert.Equal(new DescriptorSegment(0x12000, 1, true), chain.Segments[2]);
    }

    [Fact]
    public void RangesSplitAWindowAcrossSegments()
    {
        _driver.AddChain(new Buf(0x10000, 10, false), new Buf(0x20000, 6, false), new Buf(0x30000, 100, true));
        Assert.Equal(PopResult.Chain, _queue.TryPop(_memory, out var chain));
        var ranges = new List<GuestRange>();
        foreach (var r in chain.Ranges(false, 8, 5)) ranges.Add(r);
        Assert.Equal([new GuestRange(0x10008, 2), new GuestRange(0x20000, 3)], ranges);
        ranges.Clear();
        foreach (var r in chain.Ranges(true, 99, 50)) ranges.Add(r);
        Assert.Equal([new GuestRange(0x30000 + 99, 1)], ranges);
        ranges.Clear();
        foreach (var r in chain.Ranges(false, 16, 10)) ranges.Add(r);
        Assert.Empty(ranges);
    }

    [Fact]
    public void ZeroLengthBuffersAreAllowed()
    {
        _driver.AddChain(new Buf(0x10000, 0, false), new Buf(0x11000, 1, true));
        Assert.Equal(PopResult.Chain, _queue.TryPop(_memory, out var chain));
        Assert.Equal(0UL, chain.ReadableLength);
    }

    [Fact]
    public void ALoopInTheDescriptorTableIsDetected()
    {
        _driver.SetDescriptor(0, 0x10000, 16, Next, 1);
        _driver.SetDescriptor(1, 0x10000, 16, Next, 2);
        _driver.SetDescriptor(2, 0x10000, 16, Next, 0);
        _driver.Publish(0);
        Assert.Contains("loop", Broken());
    }

    [Fact]
    public void ASelfLoopIsDetected()
    {
        _driver.SetDescriptor(3, 0x10000, 16, Next | Write, 3);
        _driver.Publish(3);
        Assert.Contains("loop", Broken());
    }

    [Fact]
    public void ALoopInsideAnIndirectTableIsDetected()
    {
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, 0x10000, 16, Next, 1);
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 1, 0x10000, 16, Next, 0);
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 32, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("more than 8 buffers", Broken());
    }

    [Fact]
    public void DirectPlusIndirectLongerThanTheQueueIsRejected()
    {
        for (int i = 0; i < 8; i++) _driver.SetDescriptor(FakeDriver.IndirectAddr, i, 0x10000, 16, (ushort)(i < 7 ? Next : 0), (ushort)(i + 1));
        _driver.SetDescriptor(0, 0x10000, 16, Next, 1);
        _driver.SetDescriptor(1, FakeDriver.IndirectAddr, 8 * 16, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("more than 8 buffers", Broken());
    }

    [Theory]
    [InlineData(8)]
    [InlineData(0xffff)]
    public void ANextIndexOutsideTheQueueIsRejected(int next)
    {
        _driver.SetDescriptor(0, 0x10000, 16, Next, (ushort)next);
        _driver.Publish(0);
        Assert.Contains("outside the queue", Broken());
    }

    [Fact]
    public void AHeadOutsideTheQueueIsRejected()
    {
        _driver.Publish(8);
        Assert.Contains("names descriptor 8", Broken());
    }

    [Theory]
    [InlineData(9)]
    [InlineData(0x8000)]
    [InlineData(0xffff)]
    public void AnAvailIndexJumpLargerThanTheQueueIsRejected(int idx)
    {
        _driver.SetAvailIdx((ushort)idx);
        Assert.Contains("ahead", Broken());
    }

    [Theory]
    [InlineData(0xC000_0000UL, 16u)]                    // the MMIO gap
    [InlineData(0x100000UL - 8, 16u)]                   // straddles the end of RAM
    [InlineData(0xFFFF_FFFF_FFFF_FF00UL, 0x200u)]       // address + length wraps around
    [InlineData(0x10000UL, 0xFFFF_FFFFu)]               // huge length
    public void BuffersOutsideGuestRamAreRejected(ulong addr, uint len)
    {
        _driver.AddChain(new Buf(0x10000, 16, false), new Buf(addr, len, true));
        Assert.Contains("outside guest RAM", Broken());
    }

    [Fact]
    public void AReadableBufferAfterAWritableOneIsRejected()
    {
        _driver.AddChain(new Buf(0x10000, 16, false), new Buf(0x11000, 16, true), new Buf(0x12000, 16, false));
        Assert.Contains("device-readable buffer after a device-writable one", Broken());
    }

    [Fact]
    public void NestedIndirectTablesAreRejected()
    {
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, FakeDriver.IndirectAddr + 0x100, 16, Indirect, 0);
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 16, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("indirect descriptor inside an indirect table", Broken());
    }

    [Fact]
    public void IndirectWithNextIsRejected()
    {
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, 0x10000, 16, 0, 0);
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 16, Indirect | Next, 1);
        _driver.Publish(0);
        Assert.Contains("both INDIRECT and NEXT", Broken());
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(15u)]
    [InlineData(24u)]
    public void IndirectTableLengthsThatAreNotWholeDescriptorsAreRejected(uint len)
    {
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, len, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("not a non-zero multiple of 16", Broken());
    }

    [Fact]
    public void IndirectTablesLargerThanTheQueueAreRejected()
    {
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 9 * 16, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("exceeds the queue size", Broken());
    }

    [Fact]
    public void IndirectTablesOutsideRamAreRejected()
    {
        _driver.SetDescriptor(0, 0x100000 - 16, 32, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("indirect table", Broken());
    }

    [Fact]
    public void ANextIndexOutsideTheIndirectTableIsRejected()
    {
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, 0x10000, 16, Next, 2);
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 1, 0x10000, 16, 0, 0);
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 32, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("outside its indirect table", Broken());
    }

    [Fact]
    public void IndirectWithoutTheFeatureIsRejected()
    {
        _queue.IndirectDesc = false;
        _driver.SetDescriptor(FakeDriver.IndirectAddr, 0, 0x10000, 16, 0, 0);
        _driver.SetDescriptor(0, FakeDriver.IndirectAddr, 16, Indirect, 0);
        _driver.Publish(0);
        Assert.Contains("INDIRECT_DESC", Broken());
    }

    [Fact]
    public void ResetClearsBrokenAndProgress()
    {
        _driver.SetAvailIdx(100);
        Broken();
        _queue.Reset();
        Assert.False(_queue.IsBroken);
        Assert.False(_queue.Ready);
        Assert.Equal(256, _queue.Size);
        Assert.Equal(0, _queue.NextAvail);
    }

    [Fact]
    public void UsedRingEntriesWrapAroundTheQueue()
    {
        for (int i = 0; i < 20; i++)
        {
            ushort head = _driver.AddChain(new Buf(0x10000, 16, false));
            Assert.Equal(PopResult.Chain, _queue.TryPop(_memory, out var chain));
            _queue.AddUsed(_memory, chain.Head, (uint)i);
            Assert.Equal((head, (uint)i), _driver.Used(i));
        }
        Assert.Equal(20, _driver.UsedIdx);
        Assert.Equal(20, _queue.NextAvail);
    }
}
