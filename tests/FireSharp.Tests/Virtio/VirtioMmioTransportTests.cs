using FireSharp.Devices.Virtio;
using static FireSharp.Tests.Virtio.Mmio;

namespace FireSharp.Tests.Virtio;

/// <summary>The virtio-mmio v2 register file: identification, feature negotiation, status rules, queue setup, reset.</summary>
public class VirtioMmioTransportTests
{
    private const uint Ack = VirtioStatus.Acknowledge, Drv = VirtioStatus.Driver, FOk = VirtioStatus.FeaturesOk, DOk = VirtioStatus.DriverOk;

    [Fact]
    public void IdentifiesAsAModernBlockDevice()
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        Assert.Equal(0x74726976u, R32(t, VirtioMmioRegister.MagicValue));
        Assert.Equal(2u, R32(t, VirtioMmioRegister.Version));
        Assert.Equal(2u, R32(t, VirtioMmioRegister.DeviceId));
        Assert.Equal(VirtioMmioRegister.FireSharpVendorId, R32(t, VirtioMmioRegister.VendorId));
        Assert.Equal(0u, R32(t, VirtioMmioRegister.Status));
        W32(t, VirtioMmioRegister.QueueSel, 0);
        Assert.Equal(256u, R32(t, VirtioMmioRegister.QueueNumMax));
        Assert.Equal(0u, R32(t, VirtioMmioRegister.QueueReady));
        W32(t, VirtioMmioRegister.QueueSel, 1); // blk has one queue
        Assert.Equal(0u, R32(t, VirtioMmioRegister.QueueNumMax));
        Assert.Equal(uint.MaxValue, R32(t, VirtioMmioRegister.ShmLenLow)); // no shared memory regions
    }

    [Fact]
    public void DeviceFeaturesAreReadThroughTheSelector()
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.DeviceFeaturesSel, 0);
        uint low = R32(t, VirtioMmioRegister.DeviceFeatures);
        W32(t, VirtioMmioRegister.DeviceFeaturesSel, 1);
        uint high = R32(t, VirtioMmioRegister.DeviceFeatures);
        W32(t, VirtioMmioRegister.DeviceFeaturesSel, 2);
        Assert.Equal(0u, R32(t, VirtioMmioRegister.DeviceFeatures));

        Assert.Equal(1u, high & 1); // VIRTIO_F_VERSION_1 is bit 32
        Assert.NotEqual(0u, low & (1u << VirtioFeatures.EventIdxBit));
        Assert.NotEqual(0u, low & (1u << VirtioFeatures.IndirectDescBit));
        Assert.NotEqual(0u, low & (1u << VirtioBlock.FeatureFlush));
        Assert.NotEqual(0u, low & (1u << VirtioBlock.FeatureSegMax));
    }

    [Theory]
    [InlineData(0UL)]                                                   // legacy driver: no VERSION_1
    [InlineData(VirtioFeatures.EventIdx | VirtioFeatures.IndirectDesc)] // still no VERSION_1
    [InlineData(VirtioFeatures.Version1 | (1UL << 40))]                 // a bit the device never offered
    [InlineData(VirtioFeatures.Version1 | (1UL << VirtioBlock.FeatureReadOnly))] // RO not offered on a rw drive
    public void FeaturesOkIsRefusedForUnacceptableFeatures(ulong features)
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.Status, Ack | Drv);
        SetFeatures(t, features);
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk);
        Assert.Equal(Ack | Drv, R32(t, VirtioMmioRegister.Status));
        Assert.Single(rig.Logger.Entries, e => e.Id.Id == 4002);
        // And DRIVER_OK cannot follow without FEATURES_OK.
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk | DOk);
        Assert.Equal(0u, R32(t, VirtioMmioRegister.Status) & (FOk | DOk));
    }

    [Fact]
    public void FeaturesOkIsAcceptedForVersion1AloneAndFeaturesFreezeAfterIt()
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.Status, Ack | Drv);
        SetFeatures(t, VirtioFeatures.Version1);
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk);
        Assert.Equal(Ack | Drv | FOk, R32(t, VirtioMmioRegister.Status));
        SetFeatures(t, VirtioFeatures.Transport); // too late: ignored
        Assert.Equal(VirtioFeatures.Version1, t.DriverFeatures);
    }

    [Fact]
    public void WithoutEventIdxOrIndirectTheRingWorksAndIndirectIsAnError()
    {
        using var rig = new BlockRig(features: VirtioFeatures.Version1);
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));

        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512, indirect: true);
        rig.Notify();
        Assert.True(rig.Transport.NeedsReset);
        Assert.Contains("INDIRECT_DESC", rig.Transport.Queues[0].BrokenReason);
    }

    [Fact]
    public void NothingIsProcessedBeforeDriverOkAndDriverOkPicksUpWaitingBuffers()
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.Status, Ack | Drv);
        SetFeatures(t, VirtioFeatures.Transport);
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk);
        SetupQueue(t, 0, 16, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr);
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        Notify(t);
        Assert.Equal(0, rig.Driver.UsedIdx);
        Assert.Equal(0xEE, req.Status(rig.Memory));

        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk | DOk);
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
    }

    [Fact]
    public void ResetByWritingZeroClearsEverythingAndTheDeviceComesBackUp()
    {
        using var rig = new BlockRig();
        var t = rig.Transport;
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.NotEqual(0u, t.InterruptStatus);

        W32(t, VirtioMmioRegister.Status, 0);
        Assert.Equal(0u, R32(t, VirtioMmioRegister.Status));
        Assert.Equal(0u, R32(t, VirtioMmioRegister.InterruptStatus));
        W32(t, VirtioMmioRegister.QueueSel, 0);
        Assert.Equal(0u, R32(t, VirtioMmioRegister.QueueReady));
        Assert.Equal(0UL, t.DriverFeatures);
        Assert.Equal(0, t.Queues[0].NextAvail);
        Assert.Equal(0, t.Queues[0].NextUsed);

        // A fresh driver instance, fresh rings.
        rig.Memory.Clear(FakeDriver.AvailAddr, 0x2000);
        var driver = new FakeDriver(rig.Memory, 16);
        Bringup(t, 16);
        var req = driver.AddBlockRequest(VirtioBlock.RequestIn, 1, 512);
        rig.Notify();
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(1, driver.UsedIdx);
    }

    [Theory]
    [InlineData(3, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr, "power of two")]
    [InlineData(512, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr, "power of two")]
    [InlineData(0, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr, "power of two")]
    [InlineData(16, FakeDriver.DescAddr + 8, FakeDriver.AvailAddr, FakeDriver.UsedAddr, "aligned")]
    [InlineData(16, FakeDriver.DescAddr, FakeDriver.AvailAddr + 1, FakeDriver.UsedAddr, "aligned")]
    [InlineData(16, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr + 2, "aligned")]
    [InlineData(16, 0xC000_0000UL, FakeDriver.AvailAddr, FakeDriver.UsedAddr, "outside guest RAM")]
    [InlineData(16, FakeDriver.DescAddr, 0xFFFF_FFFF_FFFF_FFF0UL, FakeDriver.UsedAddr, "outside guest RAM")]
    [InlineData(256, FakeDriver.DescAddr, FakeDriver.AvailAddr, 0x100000UL - 0x100, "outside guest RAM")]
    public void BadQueueLayoutSetsNeedsResetWithAConfigInterrupt(int size, ulong desc, ulong avail, ulong used, string why)
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.Status, Ack | Drv);
        SetFeatures(t, VirtioFeatures.Transport);
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk);
        SetupQueue(t, 0, (ushort)size, desc, avail, used);
        Assert.True(t.NeedsReset);
        Assert.Contains(why, t.Queues[0].BrokenReason);
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk | DOk);
        Assert.Equal(VirtioInterrupt.ConfigChange, R32(t, VirtioMmioRegister.InterruptStatus));
        Assert.Equal(1, rig.Irq.Pulses);
        Assert.NotEqual(0u, R32(t, VirtioMmioRegister.Status) & VirtioStatus.DeviceNeedsReset);
        // The driver cannot clear DEVICE_NEEDS_RESET except by a reset.
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FOk | DOk);
        Assert.True(t.NeedsReset);
        W32(t, VirtioMmioRegister.Status, 0);
        Assert.False(t.NeedsReset);
    }

    [Fact]
    public void QueueLayoutCannotChangeWhileTheQueueIsReady()
    {
        using var rig = new BlockRig();
        var t = rig.Transport;
        W32(t, VirtioMmioRegister.QueueSel, 0);
        W32(t, VirtioMmioRegister.QueueNum, 2);
        W32(t, VirtioMmioRegister.QueueDescLow, 0x8000);
        Assert.Equal(16, t.Queues[0].Size);
        Assert.Equal(FakeDriver.DescAddr, t.Queues[0].DescTable);
        Assert.Equal(1u, R32(t, VirtioMmioRegister.QueueReady));
    }

    [Fact]
    public void InterruptAckClearsOnlyTheAcknowledgedBits()
    {
        using var rig = new BlockRig();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        rig.Transport.NotifyConfigChanged();
        Assert.Equal(3u, R32(rig.Transport, VirtioMmioRegister.InterruptStatus));
        Assert.Equal(1u, R32(rig.Transport, VirtioMmioRegister.ConfigGeneration));
        W32(rig.Transport, VirtioMmioRegister.InterruptAck, VirtioInterrupt.UsedBuffer);
        Assert.Equal(VirtioInterrupt.ConfigChange, R32(rig.Transport, VirtioMmioRegister.InterruptStatus));
        W32(rig.Transport, VirtioMmioRegister.InterruptAck, VirtioInterrupt.ConfigChange);
        Assert.Equal(0u, R32(rig.Transport, VirtioMmioRegister.InterruptStatus));
    }

    [Fact]
    public void NonWordRegisterAccessesAreIgnored()
    {
        using var rig = new BlockRig(bringup: false);
        var t = rig.Transport;
        Span<byte> two = stackalloc byte[2];
        t.Read(VirtioMmioRegister.MagicValue, two);
        Assert.Equal(0, two[0] | two[1]);
        t.Write(VirtioMmioRegister.Status, [(byte)Ack]);
        Assert.Equal(0u, R32(t, VirtioMmioRegister.Status));
        Span<byte> word = stackalloc byte[4];
        t.Read(VirtioMmioRegister.MagicValue + 1, word); // unaligned
        Assert.Equal(0, word[0] | word[1] | word[2] | word[3]);
        W32(t, 0x0d0, 0x1234); // a register offset the transport does not have: nothing happens
        Assert.Equal(0u, R32(t, 0x0d0));
        Assert.Equal(0u, R32(t, VirtioMmioRegister.Status));
    }

    [Fact]
    public void NotifyForAQueueThatDoesNotExistIsIgnored()
    {
        using var rig = new BlockRig();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        Notify(rig.Transport, 1);
        Notify(rig.Transport, uint.MaxValue);
        Assert.Equal(0, rig.Driver.UsedIdx);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void NeedsResetIsLoggedOnceEvenWhenTheGuestBreaksTheQueueRepeatedly()
    {
        using var rig = new BlockRig();
        for (int round = 0; round < 3; round++)
        {
            var driver = new FakeDriver(rig.Memory, 16);
            if (round > 0) Bringup(rig.Transport, 16);
            driver.SetAvailIdx(200); // a jump larger than the queue
            rig.Notify();
            Assert.True(rig.Transport.NeedsReset);
            W32(rig.Transport, VirtioMmioRegister.Status, 0);
            rig.Memory.Clear(FakeDriver.AvailAddr, 0x2000);
        }
        Assert.Equal(3, rig.Transport.NeedsResetCount);
        Assert.Single(rig.Logger.Entries, e => e.Id.Id == 4001);
    }

    [Fact]
    public void EventIdxSuppressesInterruptsUntilUsedEventIsPassedAndPublishesAvailEvent()
    {
        using var rig = new BlockRig();
        var d = rig.Driver;
        d.SetUsedEvent(2); // "interrupt me when used idx passes 2", i.e. after the third buffer
        d.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(1, d.UsedIdx);
        Assert.Equal(0, rig.Irq.Pulses);
        Assert.Equal(1, d.AvailEvent); // device asks to be notified for the next buffer

        d.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(0, rig.Irq.Pulses);

        d.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(3, d.UsedIdx);
        Assert.Equal(1, rig.Irq.Pulses);
        Assert.Equal(3, d.AvailEvent);
    }

    [Fact]
    public void WithoutEventIdxNoInterruptFlagSuppressesInterrupts()
    {
        using var rig = new BlockRig(features: VirtioFeatures.Version1);
        rig.Driver.SetAvailFlags(Virtqueue.AvailFlagNoInterrupt);
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal(0, rig.Irq.Pulses);
        rig.Driver.SetAvailFlags(0);
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        Assert.Equal(1, rig.Irq.Pulses);
    }

    [Fact]
    public void StateRoundTripsAndTheRestoredDeviceContinuesTheRing()
    {
        using var rig = new BlockRig();
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();
        byte[] state = rig.Transport.SaveState();

        // A second device over the same memory and an identical disk, restored from the state.
        var backend = new MemoryBackend(rig.Backend.Data.Length);
        rig.Backend.Data.CopyTo(backend.Data, 0);
        var irq = new Tests.Devices.FakeInterruptLine();
        var restored = new VirtioMmioTransport(new VirtioBlock(backend, "test"), rig.Memory, irq);
        restored.RestoreState(state);
        Assert.Equal(rig.Transport.Status, restored.Status);
        Assert.Equal(rig.Transport.DriverFeatures, restored.DriverFeatures);
        Assert.Equal(1, restored.Queues[0].NextAvail);
        Assert.Equal(1, restored.Queues[0].NextUsed);
        Assert.Equal(state, restored.SaveState());

        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 4, 512);
        Notify(restored);
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(2, rig.Driver.UsedIdx);
    }

    [Fact]
    public void MalformedOrMismatchedStateIsRejectedWithoutChangingTheDevice()
    {
        using var rig = new BlockRig();
        byte[] state = rig.Transport.SaveState();
        var fresh = new VirtioMmioTransport(new VirtioBlock(new MemoryBackend(64 * 1024), "x"), rig.Memory, new Tests.Devices.FakeInterruptLine());
        Assert.Throws<InvalidDataException>(() => fresh.RestoreState(state.AsSpan(0, state.Length - 3)));
        Assert.Throws<InvalidDataException>(() => fresh.RestoreState([.. state, 0]));
        var badFormat = state.ToArray();
        badFormat[0] = 99;
        Assert.Throws<InvalidDataException>(() => fresh.RestoreState(badFormat));
        var otherDisk = new VirtioMmioTransport(new VirtioBlock(new MemoryBackend(128 * 1024), "x"), rig.Memory, new Tests.Devices.FakeInterruptLine());
        Assert.Throws<InvalidDataException>(() => otherDisk.RestoreState(state));
        Assert.Equal(0u, fresh.Status);
        Assert.Equal(0u, otherDisk.Status);
    }
}
