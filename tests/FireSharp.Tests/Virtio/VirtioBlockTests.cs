using System.Buffers.Binary;
using FireSharp.Devices.Virtio;

namespace FireSharp.Tests.Virtio;

/// <summary>virtio-blk requests end to end: fake driver → MMIO notify → transport → device → backend.</summary>
public class VirtioBlockTests
{
    [Fact]
    public void ReadReturnsTheDiskContentsAndReportsTheBytesWritten()
    {
        using var rig = new BlockRig();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, sector: 3, dataLength: 1024);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(rig.Backend.Data.AsSpan(3 * 512, 1024).ToArray(), req.ReadData(rig.Memory));
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal((req.Head, 1025u), rig.Driver.Used(0));
        Assert.Equal(1, rig.Irq.Pulses);
        Assert.Equal(VirtioInterrupt.UsedBuffer, rig.Transport.InterruptStatus);
    }

    [Fact]
    public void WriteChangesExactlyTheNamedSectors()
    {
        using var rig = new BlockRig();
        var before = rig.Backend.Data.ToArray();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestOut, sector: 5, dataLength: 1536, dataSegments: 3);
        var payload = Enumerable.Range(0, 1536).Select(i => (byte)(255 - i % 251)).ToArray();
        req.FillData(rig.Memory, payload);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(payload, rig.Backend.Data.AsSpan(5 * 512, 1536).ToArray());
        Assert.Equal(before.AsSpan(0, 5 * 512).ToArray(), rig.Backend.Data.AsSpan(0, 5 * 512).ToArray());
        Assert.Equal(before.AsSpan(8 * 512).ToArray(), rig.Backend.Data.AsSpan(8 * 512).ToArray());
        Assert.Equal((req.Head, 1u), rig.Driver.Used(0));
    }

    [Fact]
    public void FlushIsAcknowledgedOnlyAfterTheBackendFlushed()
    {
        using var rig = new BlockRig();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        byte statusDuringFlush = 0;
        ushort usedDuringFlush = 99;
        rig.Backend.OnFlush = () =>
        {
            statusDuringFlush = req.Status(rig.Memory);
            usedDuringFlush = rig.Driver.UsedIdx;
        };
        rig.Notify();

        Assert.Equal(1, rig.Backend.Flushes);
        Assert.Equal(0xEE, statusDuringFlush); // the sentinel: no status yet while flushing
        Assert.Equal(0, usedDuringFlush);
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(1, rig.Driver.UsedIdx);
    }

    [Fact]
    public void GetIdReturnsTheSerialNulPadded()
    {
        using var rig = new BlockRig(serial: "data-disk-7");
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestGetId, 0, 20);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        var expected = new byte[20];
        "data-disk-7"u8.CopyTo(expected);
        Assert.Equal(expected, req.ReadData(rig.Memory));
        Assert.Equal((req.Head, 21u), rig.Driver.Used(0));
    }

    [Fact]
    public void ReadOnlyDriveOffersRoAndFailsWritesWithoutTouchingTheDisk()
    {
        using var rig = new BlockRig(readOnly: true);
        Assert.NotEqual(0UL, rig.Transport.OfferedFeatures & (1UL << VirtioBlock.FeatureReadOnly));
        var before = rig.Backend.Data.ToArray();
        var write = rig.Driver.AddBlockRequest(VirtioBlock.RequestOut, 0, 512);
        write.FillData(rig.Memory, new byte[512]);
        var flush = rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        var read = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusIoErr, write.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusOk, flush.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusOk, read.Status(rig.Memory));
        Assert.Equal(before, rig.Backend.Data);
        Assert.Equal(3, rig.Driver.UsedIdx);
    }

    [Fact]
    public void ReadWriteDriveDoesNotOfferRo()
    {
        using var rig = new BlockRig();
        Assert.Equal(0UL, rig.Transport.OfferedFeatures & (1UL << VirtioBlock.FeatureReadOnly));
        Assert.NotEqual(0UL, rig.Transport.OfferedFeatures & (1UL << VirtioBlock.FeatureFlush));
    }

    [Theory]
    [InlineData(VirtioBlock.RequestIn, 127, 1024)]        // one sector past the end (128 sectors)
    [InlineData(VirtioBlock.RequestOut, 128, 512)]        // starts at the end
    [InlineData(VirtioBlock.RequestIn, ulong.MaxValue, 512)]
    [InlineData(VirtioBlock.RequestIn, ulong.MaxValue / 512, 512)] // sector*512 would overflow
    [InlineData(VirtioBlock.RequestIn, 0, 100)]           // not a multiple of 512
    [InlineData(VirtioBlock.RequestOut, 0, 513)]
    public void RequestsBeyondTheCapacityOrUnalignedGetIoErr(uint type, ulong sector, uint length)
    {
        using var rig = new BlockRig();
        var before = rig.Backend.Data.ToArray();
        var req = rig.Driver.AddBlockRequest(type, sector, length);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusIoErr, req.Status(rig.Memory));
        Assert.Equal(before, rig.Backend.Data);
        Assert.False(rig.Transport.NeedsReset);
        Assert.Equal(1, rig.Driver.UsedIdx);
    }

    [Theory]
    [InlineData(2u)]   // VIRTIO_BLK_T_SCSI_CMD (legacy)
    [InlineData(11u)]  // DISCARD, not offered
    [InlineData(13u)]  // WRITE_ZEROES, not offered
    [InlineData(0xdeadbeefu)]
    public void UnknownTypesGetUnsupported(uint type)
    {
        using var rig = new BlockRig();
        var req = rig.Driver.AddBlockRequest(type, 0, 512);
        rig.Notify();
        Assert.Equal(VirtioBlock.StatusUnsupported, req.Status(rig.Memory));
    }

    [Fact]
    public void HostIoErrorsBecomeIoErrAndAreLoggedOnce()
    {
        using var rig = new BlockRig();
        rig.Backend.FailIo = true;
        var a = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        var b = rig.Driver.AddBlockRequest(VirtioBlock.RequestOut, 0, 512);
        var c = rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusIoErr, a.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusIoErr, b.Status(rig.Memory));
        Assert.Equal(VirtioBlock.StatusIoErr, c.Status(rig.Memory));
        Assert.Single(rig.Logger.Entries, e => e.Id.Id == 4006);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void IndirectChainsWithManySegmentsWork()
    {
        using var rig = new BlockRig();
        var req = rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 10, 4096, indirect: true, dataSegments: 8);
        rig.Notify();
        Assert.Equal(VirtioBlock.StatusOk, req.Status(rig.Memory));
        Assert.Equal(rig.Backend.Data.AsSpan(10 * 512, 4096).ToArray(), req.ReadData(rig.Memory));
    }

    [Fact]
    public void HeaderSplitAcrossDescriptorsAndDataSharingTheStatusBufferWork()
    {
        using var rig = new BlockRig();
        var m = rig.Memory;
        var d = rig.Driver;
        ulong h1 = d.Alloc(5), h2 = d.Alloc(11), tail = d.Alloc(512 + 1);
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(header, VirtioBlock.RequestIn);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], 2);
        m.Write(h1, header[..5]);
        m.Write(h2, header[5..]);
        // The data and the status byte in one writable buffer: the status is its last byte.
        d.AddChain(new Buf(h1, 5, false), new Buf(h2, 11, false), new Buf(tail, 513, true));
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusOk, m.Read<byte>(tail + 512));
        var data = new byte[512];
        m.Read(tail, data);
        Assert.Equal(rig.Backend.Data.AsSpan(2 * 512, 512).ToArray(), data);
    }

    [Fact]
    public void ShortHeaderGetsIoErrAndNoWritableByteCompletesEmpty()
    {
        using var rig = new BlockRig();
        var d = rig.Driver;
        ulong h = d.Alloc(8), s = d.Alloc(1);
        d.AddChain(new Buf(h, 8, false), new Buf(s, 1, true));
        ulong h2 = d.Alloc(16);
        ushort second = d.AddChain(new Buf(h2, 16, false));
        rig.Notify();

        Assert.Equal(VirtioBlock.StatusIoErr, rig.Memory.Read<byte>(s));
        Assert.Equal(2, d.UsedIdx);
        Assert.Equal((second, 0u), d.Used(1));
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void ConfigSpaceHoldsCapacitySegMaxAndBlockSize()
    {
        using var rig = new BlockRig(diskBytes: 3 * 1024 * 1024);
        Assert.Equal(3u * 2048, Mmio.R32(rig.Transport, VirtioMmioRegister.Config));
        Assert.Equal(0u, Mmio.R32(rig.Transport, VirtioMmioRegister.Config + 4));
        Assert.Equal(254u, Mmio.R32(rig.Transport, VirtioMmioRegister.Config + 12));
        Assert.Equal(512u, Mmio.R32(rig.Transport, VirtioMmioRegister.Config + 20));
        Span<byte> eight = stackalloc byte[8];
        rig.Transport.Read(VirtioMmioRegister.Config, eight);
        Assert.Equal(3UL * 2048, BinaryPrimitives.ReadUInt64LittleEndian(eight));
        Span<byte> one = stackalloc byte[1];
        rig.Transport.Read(VirtioMmioRegister.Config + 1, one);
        Assert.Equal(0x18, one[0]); // 6144 = 0x1800
        rig.Transport.Read(VirtioMmioRegister.Config + 0x800, eight);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(eight));
    }

    [Fact]
    public void RawImageBackendReadsWritesAndFlushesAFile()
    {
        string dir = Support.TestPaths.TempDir();
        string path = Path.Combine(dir, "disk.img");
        File.WriteAllBytes(path, Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray());
        using (var backend = RawImageBackend.Open(path, readOnly: false))
        {
            Assert.Equal(4096UL, backend.SizeBytes);
            var buf = new byte[512];
            backend.Read(512, buf);
            Assert.Equal(Enumerable.Range(512, 512).Select(i => (byte)i).ToArray(), buf);
            backend.Write(1024, new byte[512]);
            backend.Flush();
        }
        var after = File.ReadAllBytes(path);
        Assert.All(after.AsSpan(1024, 512).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal((byte)(2047 % 256), after[2047]); // neighbours intact
        Assert.Equal((byte)(1023 % 256), after[1023]);
        Assert.Equal((byte)(1536 % 256), after[1536]);
    }
}
