using System.Buffers.Binary;
using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;

namespace FireSharp.Tests.Virtio;

/// <summary>One buffer of a chain a test driver builds.</summary>
internal readonly record struct Buf(ulong Addr, uint Len, bool Write);

/// <summary>
/// A fake virtio driver: lays out a split virtqueue in guest memory (descriptor table at 0x1000, avail ring at
/// 0x2000, used ring at 0x3000, indirect tables from 0x4000, buffers from 0x10000) and builds chains the way a
/// guest would, or any malformed way a test wants.
/// </summary>
internal sealed class FakeDriver
{
    public const ulong DescAddr = 0x1000, AvailAddr = 0x2000, UsedAddr = 0x3000, IndirectAddr = 0x4000, DataAddr = 0x10000;

    private int _nextDesc;
    private ulong _nextData = DataAddr;
    private ulong _nextIndirect = IndirectAddr;

    public FakeDriver(GuestMemory memory, ushort size)
    {
        Memory = memory;
        Size = size;
    }

    public GuestMemory Memory { get; }
    public ushort Size { get; }
    public ushort AvailIdx { get; private set; }

    public ulong Alloc(uint bytes)
    {
        ulong at = _nextData;
        _nextData = (_nextData + bytes + 15) & ~15UL;
        if (_nextData > Memory.TotalSize) throw new InvalidOperationException("fake driver ran out of buffer space");
        return at;
    }

    public void SetDescriptor(ulong table, int index, ulong addr, uint len, ushort flags, ushort next)
    {
        var d = Memory.GetSpan(table + (ulong)(16 * index), 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    public void SetDescriptor(int index, ulong addr, uint len, ushort flags, ushort next) =>
        SetDescriptor(DescAddr, index, addr, len, flags, next);

    /// <summary>Writes the buffers as a NEXT-linked chain in free main-table slots and publishes its head.</summary>
    public ushort AddChain(params Buf[] bufs)
    {
        ushort head = (ushort)(_nextDesc % Size);
        for (int i = 0; i < bufs.Length; i++)
        {
            int index = (_nextDesc + i) % Size;
            bool last = i == bufs.Length - 1;
            ushort flags = (ushort)((bufs[i].Write ? Virtqueue.DescFlagWrite : 0) | (last ? 0 : Virtqueue.DescFlagNext));
            SetDescriptor(index, bufs[i].Addr, bufs[i].Len, flags, (ushort)((index + 1) % Size));
        }
        _nextDesc += bufs.Length;
        Publish(head);
        return head;
    }

    /// <summary>Writes the buffers into a new indirect table, one main descriptor pointing at it, and publishes that.</summary>
    public ushort AddIndirectChain(params Buf[] bufs)
    {
        ulong table = _nextIndirect;
        _nextIndirect += (ulong)(16 * bufs.Length + 16) & ~15UL;
        for (int i = 0; i < bufs.Length; i++)
        {
            bool last = i == bufs.Length - 1;
            ushort flags = (ushort)((bufs[i].Write ? Virtqueue.DescFlagWrite : 0) | (last ? 0 : Virtqueue.DescFlagNext));
            SetDescriptor(table, i, bufs[i].Addr, bufs[i].Len, flags, (ushort)(i + 1));
        }
        ushort head = (ushort)(_nextDesc % Size);
        SetDescriptor(head, table, (uint)(16 * bufs.Length), Virtqueue.DescFlagIndirect, 0);
        _nextDesc++;
        Publish(head);
        return head;
    }

    public void Publish(ushort head)
    {
        Memory.Write<ushort>(AvailAddr + 4 + 2 * (ulong)(AvailIdx % Size), head);
        SetAvailIdx((ushort)(AvailIdx + 1));
    }

    public void SetAvailIdx(ushort idx)
    {
        AvailIdx = idx;
        Memory.Write<ushort>(AvailAddr + 2, idx);
    }

    public void SetAvailFlags(ushort flags) => Memory.Write<ushort>(AvailAddr, flags);
    public void SetUsedEvent(ushort value) => Memory.Write<ushort>(AvailAddr + 4 + 2 * (ulong)Size, value);
    public ushort AvailEvent => Memory.Read<ushort>(UsedAddr + 4 + 8 * (ulong)Size);
    public ushort UsedIdx => Memory.Read<ushort>(UsedAddr + 2);
    public (uint Id, uint Len) Used(int i) =>
        (Memory.Read<uint>(UsedAddr + 4 + 8 * (ulong)(i % Size)), Memory.Read<uint>(UsedAddr + 8 + 8 * (ulong)(i % Size)));

    /// <summary>A block request: header (readable), data (readable for OUT, writable otherwise), status byte.</summary>
    public BlockRequest AddBlockRequest(uint type, ulong sector, uint dataLength, bool indirect = false, int dataSegments = 1)
    {
        ulong header = Alloc(16);
        Memory.Write(header, type);
        Memory.Write(header + 4, 0u);
        Memory.Write(header + 8, sector);
        bool dataWritable = type != VirtioBlock.RequestOut;
        var bufs = new List<Buf> { new(header, 16, false) };
        var data = new List<Buf>();
        if (dataLength > 0)
        {
            uint per = dataLength / (uint)dataSegments;
            for (int i = 0; i < dataSegments; i++)
            {
                uint len = i == dataSegments - 1 ? dataLength - per * (uint)(dataSegments - 1) : per;
                var b = new Buf(Alloc(len), len, dataWritable);
                data.Add(b);
                bufs.Add(b);
            }
        }
        ulong status = Alloc(1);
        Memory.Write<byte>(status, 0xEE);
        bufs.Add(new Buf(status, 1, true));
        ushort head = indirect ? AddIndirectChain([.. bufs]) : AddChain([.. bufs]);
        return new BlockRequest(head, header, data, status);
    }
}

internal sealed record BlockRequest(ushort Head, ulong Header, List<Buf> Data, ulong StatusAddr)
{
    public byte Status(GuestMemory m) => m.Read<byte>(StatusAddr);

    public byte[] ReadData(GuestMemory m)
    {
        var result = new List<byte>();
        foreach (var b in Data)
        {
            var bytes = new byte[b.Len];
            m.Read(b.Addr, bytes);
            result.AddRange(bytes);
        }
        return [.. result];
    }

    public void FillData(GuestMemory m, ReadOnlySpan<byte> source)
    {
        int at = 0;
        foreach (var b in Data)
        {
            m.Write(b.Addr, source.Slice(at, (int)b.Len));
            at += (int)b.Len;
        }
    }
}

/// <summary>A disk in a byte array, with hooks to observe flushes and inject failures.</summary>
internal sealed class MemoryBackend(int bytes, bool readOnly = false) : IBlockBackend
{
    public byte[] Data { get; } = new byte[bytes];
    public ulong SizeBytes => (ulong)Data.Length;
    public bool IsReadOnly { get; } = readOnly;
    public int Flushes { get; private set; }
    public Action? OnFlush { get; set; }
    public bool FailIo { get; set; }
    public bool Disposed { get; private set; }

    public void Read(ulong offset, Span<byte> destination)
    {
        if (FailIo) throw new IOException("injected read failure");
        Data.AsSpan((int)offset, destination.Length).CopyTo(destination);
    }

    public void Write(ulong offset, ReadOnlySpan<byte> source)
    {
        if (FailIo) throw new IOException("injected write failure");
        if (IsReadOnly) throw new InvalidOperationException("device wrote to a read-only backend");
        source.CopyTo(Data.AsSpan((int)offset));
    }

    public void Flush()
    {
        if (FailIo) throw new IOException("injected flush failure");
        OnFlush?.Invoke();
        Flushes++;
    }

    public void Dispose() => Disposed = true;
}

internal sealed class ListLogger : ILogger
{
    private readonly List<(LogLevel Level, EventId Id, string Message)> _entries = [];
    public IReadOnlyList<(LogLevel Level, EventId Id, string Message)> Entries { get { lock (_entries) return [.. _entries]; } }
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_entries) _entries.Add((logLevel, eventId, formatter(state, exception)));
    }
}

/// <summary>Drives a transport's registers the way a virtio-mmio driver's probe does.</summary>
internal static class Mmio
{
    public static uint R32(IBusDevice d, uint offset)
    {
        Span<byte> b = stackalloc byte[4];
        d.Read(offset, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public static void W32(IBusDevice d, uint offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        d.Write(offset, b);
    }

    public static void SetFeatures(IBusDevice t, ulong features)
    {
        W32(t, VirtioMmioRegister.DriverFeaturesSel, 0);
        W32(t, VirtioMmioRegister.DriverFeatures, (uint)features);
        W32(t, VirtioMmioRegister.DriverFeaturesSel, 1);
        W32(t, VirtioMmioRegister.DriverFeatures, (uint)(features >> 32));
    }

    public static void SetupQueue(IBusDevice t, int index, ushort size, ulong desc, ulong avail, ulong used, bool ready = true)
    {
        W32(t, VirtioMmioRegister.QueueSel, (uint)index);
        W32(t, VirtioMmioRegister.QueueNum, size);
        W32(t, VirtioMmioRegister.QueueDescLow, (uint)desc);
        W32(t, VirtioMmioRegister.QueueDescHigh, (uint)(desc >> 32));
        W32(t, VirtioMmioRegister.QueueDriverLow, (uint)avail);
        W32(t, VirtioMmioRegister.QueueDriverHigh, (uint)(avail >> 32));
        W32(t, VirtioMmioRegister.QueueDeviceLow, (uint)used);
        W32(t, VirtioMmioRegister.QueueDeviceHigh, (uint)(used >> 32));
        if (ready) W32(t, VirtioMmioRegister.QueueReady, 1);
    }

    /// <summary>The full init sequence (virtio 1.x, 3.1.1) with the fake driver's queue 0 layout.</summary>
    public static void Bringup(IBusDevice t, ushort size, ulong features = VirtioFeatures.Transport)
    {
        W32(t, VirtioMmioRegister.Status, 0);
        W32(t, VirtioMmioRegister.Status, VirtioStatus.Acknowledge);
        W32(t, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver);
        SetFeatures(t, features);
        W32(t, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk);
        Assert.NotEqual(0u, R32(t, VirtioMmioRegister.Status) & VirtioStatus.FeaturesOk);
        SetupQueue(t, 0, size, FakeDriver.DescAddr, FakeDriver.AvailAddr, FakeDriver.UsedAddr);
        W32(t, VirtioMmioRegister.Status, VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk | VirtioStatus.DriverOk);
    }

    public static void Notify(IBusDevice t, uint queue = 0) => W32(t, VirtioMmioRegister.QueueNotify, queue);
}

/// <summary>
/// A device's MMIO window seen through a VM's MMIO bus, as a vCPU's MMIO exit reaches it: drives a device the
/// device manager placed exactly as a guest driver would (without running the guest).
/// </summary>
internal sealed class BusWindow(FireSharp.Vm.DeviceBus bus, ulong address) : IBusDevice
{
    public void Read(ulong offset, Span<byte> data) => Assert.True(bus.Read(address + offset, data), $"nothing at 0x{address + offset:x}");

    public void Write(ulong offset, ReadOnlySpan<byte> data) => Assert.True(bus.Write(address + offset, data), $"nothing at 0x{address + offset:x}");
}

/// <summary>A virtio-blk device over a <see cref="MemoryBackend"/> behind a live transport and a fake driver.</summary>
internal sealed class BlockRig : IDisposable
{
    public BlockRig(int diskBytes = 64 * 1024, bool readOnly = false, ushort size = 16, ulong features = VirtioFeatures.Transport,
        string? serial = null, ulong memoryBytes = 1024 * 1024, bool bringup = true)
    {
        Memory = GuestMemory.CreateAnonymous(memoryBytes);
        Backend = new MemoryBackend(diskBytes, readOnly);
        for (int i = 0; i < Backend.Data.Length; i++) Backend.Data[i] = (byte)(i * 7 + i / 512);
        Block = new VirtioBlock(Backend, "test", serial, Logger);
        Irq = new Tests.Devices.FakeInterruptLine();
        Transport = new VirtioMmioTransport(Block, Memory, Irq, Logger);
        Driver = new FakeDriver(Memory, size);
        if (bringup) Mmio.Bringup(Transport, size, features);
    }

    public GuestMemory Memory { get; }
    public MemoryBackend Backend { get; }
    public VirtioBlock Block { get; }
    public Tests.Devices.FakeInterruptLine Irq { get; }
    public VirtioMmioTransport Transport { get; }
    public FakeDriver Driver { get; }
    public ListLogger Logger { get; } = new();

    public void Notify() => Mmio.Notify(Transport);

    /// <summary>
    /// A queue-only event loop for the device, attached as the device manager attaches it (not started); with
    /// <paramref name="notifyThroughTheLoop"/> the QueueNotify register wakes it (else only its eventfd does, as KVM's ioeventfd).
    /// </summary>
    public VirtioEventLoop QueueLoop(bool notifyThroughTheLoop = true)
    {
        var loop = VirtioEventLoop.ForQueues("virtio-blk", Block.QueueCount, e => Assert.Fail($"the loop failed: {e}"));
        if (notifyThroughTheLoop) Transport.QueueNotifyHandler = loop.Notify;
        loop.Attach(Block, Transport);
        return loop;
    }

    /// <summary>
    /// Makes every flush block in the backend: <c>Entered</c> is set once one is in, it returns when <c>Release</c>
    /// is set. The rig disposes both.
    /// </summary>
    public (ManualResetEventSlim Entered, ManualResetEventSlim Release) HoldFlushes()
    {
        var entered = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        _held = (entered, release);
        Backend.OnFlush = () =>
        {
            entered.Set();
            release.Wait();
        };
        return (entered, release);
    }

    private (ManualResetEventSlim Entered, ManualResetEventSlim Release)? _held;

    public void Dispose()
    {
        Memory.Dispose();
        _held?.Entered.Dispose();
        _held?.Release.Dispose();
    }
}
