using System.Buffers.Binary;
using FireSharp.Devices.Virtio;
using FireSharp.Memory;

namespace FireSharp.Tests.Virtio;

/// <summary>
/// The ring side of a fake guest driver for a device with several split queues of one size: queue q has its
/// descriptor table at <see cref="Desc"/>(q) = 0x10000 × (q + 1), avail ring 0x1000 and used ring 0x2000 after
/// it. It writes descriptors, publishes heads and collects used entries; which buffers go where is the rig's.
/// </summary>
internal sealed class SplitQueueDriver(GuestMemory memory, int queueCount, ushort queueSize)
{
    private readonly ushort[] _avail = new ushort[queueCount];
    private readonly ushort[] _lastUsed = new ushort[queueCount];

    public ushort QueueSize { get; } = queueSize;

    public static ulong Desc(int q) => 0x10000 * (ulong)(q + 1);
    public static ulong Avail(int q) => Desc(q) + 0x1000;
    public static ulong Used(int q) => Desc(q) + 0x2000;

    /// <summary>Sets up and enables every queue on the transport (the driver is between FEATURES_OK and DRIVER_OK).</summary>
    public void SetupQueues(VirtioMmioTransport transport)
    {
        for (int q = 0; q < _avail.Length; q++) Mmio.SetupQueue(transport, q, QueueSize, Desc(q), Avail(q), Used(q));
    }

    public void SetDesc(int q, int index, ulong addr, uint len, ushort flags, ushort next)
    {
        var d = memory.GetSpan(Desc(q) + (ulong)(16 * index), 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    /// <summary>Puts <paramref name="head"/> on queue <paramref name="q"/>'s avail ring and advances its index.</summary>
    public void Publish(int q, int head)
    {
        memory.Write<ushort>(Avail(q) + 4 + 2 * (ulong)(_avail[q] % QueueSize), (ushort)head);
        _avail[q]++;
        memory.Write<ushort>(Avail(q) + 2, _avail[q]);
    }

    /// <summary>The used entries (head, length) the device added to queue <paramref name="q"/> since the last call.</summary>
    public List<(int Head, uint Len)> TakeUsed(int q)
    {
        var list = new List<(int, uint)>();
        ushort idx = memory.Read<ushort>(Used(q) + 2);
        while (_lastUsed[q] != idx)
        {
            ulong e = Used(q) + 4 + 8 * (ulong)(_lastUsed[q] % QueueSize);
            list.Add(((int)memory.Read<uint>(e), memory.Read<uint>(e + 4)));
            _lastUsed[q]++;
        }
        return list;
    }
}
