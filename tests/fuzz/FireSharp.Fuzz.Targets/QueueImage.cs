using System.Buffers.Binary;
using FireSharp.Devices.Virtio;
using FireSharp.Memory;

namespace FireSharp.Fuzz;

/// <summary>
/// Guest memory built from a fuzz input, as a hostile virtio driver would leave it: split virtqueues
/// (queue q: descriptor table at 0x10000 × (q + 1), avail ring 0x1000 and used ring 0x2000 after it) and a
/// data area from <see cref="DataStart"/> that descriptors point into.
/// <para>Input format, every field little-endian, missing bytes read as zero:</para>
/// <list type="bullet">
/// <item>u8: log2 of the queue size (mod 9, so 1..256); u8: driver features (bit 0 indirect descriptors, bit 1 event index); u8: block count (mod 5).</item>
/// <item>each block: u8 queue (mod the device's queue count); u8 n; n descriptors of 16 bytes (addr u64, len u32, flags u16,
/// next u16) written to slots 0..n-1 (mod size); u8 k; k avail heads (u16) published in order.</item>
/// <item>the rest: the data area's bytes.</item>
/// </list>
/// A descriptor address whose two top bits are clear is an offset into the data area (mod its length); any other
/// is used as it is (outside RAM, unaligned, huge). A length whose top bit is clear is taken mod 64 KiB.
/// </summary>
public sealed class QueueImage
{
    public const ulong MemoryBytes = 2 << 20;
    public const ulong DataStart = 0x80000;
    public const ulong DataLength = MemoryBytes - DataStart;

    private QueueImage(ushort size, ulong features, List<(int Queue, List<ushort> Heads)> blocks)
    {
        QueueSize = size;
        DriverFeatures = features;
        Blocks = blocks;
    }

    public ushort QueueSize { get; }

    /// <summary>The features the driver accepts (transport bits only; the device's own bits are added by the rig).</summary>
    public ulong DriverFeatures { get; }

    /// <summary>The queues the input published heads on, in order, with the heads.</summary>
    public IReadOnlyList<(int Queue, List<ushort> Heads)> Blocks { get; }

    public static ulong Desc(int q) => 0x10000 * (ulong)(q + 1);
    public static ulong Avail(int q) => Desc(q) + 0x1000;
    public static ulong Used(int q) => Desc(q) + 0x2000;

    /// <summary>Decodes <paramref name="input"/> into <paramref name="memory"/> (which must be <see cref="MemoryBytes"/> and zeroed).</summary>
    public static QueueImage Decode(byte[] input, GuestMemory memory, int queueCount)
    {
        ArgumentNullException.ThrowIfNull(memory);
        var r = new FuzzReader(input);
        ushort size = (ushort)(1 << (r.U8() % 9));
        byte f = r.U8();
        ulong features = VirtioFeatures.Version1
            | ((f & 1) != 0 ? VirtioFeatures.IndirectDesc : 0)
            | ((f & 2) != 0 ? VirtioFeatures.EventIdx : 0);
        int blockCount = r.U8() % 5;
        var blocks = new List<(int, List<ushort>)>();
        var availIdx = new ushort[queueCount];
        for (int b = 0; b < blockCount; b++)
        {
            int q = r.U8() % queueCount;
            int n = r.U8();
            for (int i = 0; i < n; i++)
            {
                ulong addr = r.U64();
                uint len = r.U32();
                ushort flags = r.U16(), next = r.U16();
                if (addr >> 62 == 0) addr = DataStart + addr % DataLength;
                if (len >> 31 == 0) len %= 0x10000;
                var d = memory.GetSpan(Desc(q) + 16 * (ulong)(i % size), 16);
                BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
                BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
                BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
                BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
            }
            int k = r.U8();
            var heads = new List<ushort>(k);
            for (int i = 0; i < k; i++)
            {
                ushort head = r.U16();
                memory.Write<ushort>(Avail(q) + 4 + 2 * (ulong)(availIdx[q] % size), head);
                availIdx[q]++;
                heads.Add(head);
            }
            memory.Write<ushort>(Avail(q) + 2, availIdx[q]);
            blocks.Add((q, heads));
        }
        var data = r.Rest();
        if ((ulong)data.Length > DataLength) data = data[..(int)DataLength];
        memory.Write(DataStart, data);
        return new QueueImage(size, features, blocks);
    }
}

/// <summary>Writes inputs in <see cref="QueueImage"/>'s format, for the seed corpus.</summary>
public sealed class QueueImageBuilder(int sizeLog2 = 4, bool indirect = false, bool eventIdx = false)
{
    private readonly List<(int Queue, List<(ulong Addr, uint Len, ushort Flags, ushort Next)> Descs, List<ushort> Heads)> _blocks = [];
    private readonly List<byte> _data = [];

    /// <summary>Puts <paramref name="bytes"/> in the data area and returns their guest address.</summary>
    public ulong Data(ReadOnlySpan<byte> bytes)
    {
        ulong at = QueueImage.DataStart + (ulong)_data.Count;
        _data.AddRange(bytes);
        while (_data.Count % 16 != 0) _data.Add(0);
        return at;
    }

    /// <summary>
    /// The address of scratch buffer <paramref name="index"/> (8 KiB each) in the upper half of the data area,
    /// which an input leaves zero: receive buffers and the like, without putting their bytes in the input.
    /// </summary>
    public static ulong Scratch(int index) => QueueImage.DataStart + QueueImage.DataLength / 2 + 0x2000 * (ulong)index;

    /// <summary>A block: descriptors (guest addresses, which must be in the data area) for slots 0.., then the heads to publish.</summary>
    public QueueImageBuilder Block(int queue, (ulong Addr, uint Len, ushort Flags, ushort Next)[] descs, params ushort[] heads)
    {
        _blocks.Add((queue, [.. descs], [.. heads]));
        return this;
    }

    public byte[] Build()
    {
        var o = new List<byte> { (byte)sizeLog2, (byte)((indirect ? 1 : 0) | (eventIdx ? 2 : 0)), (byte)_blocks.Count };
        Span<byte> b = stackalloc byte[16];
        foreach (var (q, descs, heads) in _blocks)
        {
            o.Add((byte)q);
            o.Add((byte)descs.Count);
            foreach (var (addr, len, flags, next) in descs)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(b, addr - QueueImage.DataStart);
                BinaryPrimitives.WriteUInt32LittleEndian(b[8..], len);
                BinaryPrimitives.WriteUInt16LittleEndian(b[12..], flags);
                BinaryPrimitives.WriteUInt16LittleEndian(b[14..], next);
                o.AddRange(b.ToArray());
            }
            o.Add((byte)heads.Count);
            foreach (var h in heads)
            {
                o.Add((byte)h);
                o.Add((byte)(h >> 8));
            }
        }
        o.AddRange(_data);
        return [.. o];
    }
}
