using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FireSharp.Memory;

namespace FireSharp.Devices.Virtio;

/// <summary>What <see cref="Virtqueue.TryPop"/> found.</summary>
public enum PopResult
{
    /// <summary>No buffer is available.</summary>
    Empty,

    /// <summary>A valid chain was popped.</summary>
    Chain,

    /// <summary>The queue is malformed (now or earlier); it stays broken until the device is reset.</summary>
    Broken,
}

/// <summary>
/// A split virtqueue (virtio 1.x, "Split Virtqueues") seen from the device, written for a hostile driver.
/// The driver owns every byte of the three rings and may change them at any moment, so each field is read
/// once into a local, checked, and used from there; every guest address and length is checked against
/// guest RAM before any access; a chain can visit at most <see cref="Size"/> buffer descriptors (which
/// also ends any loop), indirect tables are checked for size, placement and nesting, and device-readable
/// buffers must come before device-writable ones. Anything malformed breaks the queue: it stops being
/// processed and <see cref="BrokenReason"/> says why, until <see cref="Reset"/>.
/// Not thread-safe: the transport serializes access.
/// </summary>
public sealed class Virtqueue
{
    public const int DescriptorBytes = 16;
    public const ushort DescFlagNext = 1, DescFlagWrite = 2, DescFlagIndirect = 4;
    public const ushort AvailFlagNoInterrupt = 1;
    public const ushort MaxAllowedSize = 32768;

    private readonly DescriptorSegment[] _segments;
    private ushort _signalledUsed;   // used idx at the last interrupt decision (EVENT_IDX "old")
    private bool _usedSinceCheck;    // something was added to the used ring since that decision

    public Virtqueue(ushort maxSize)
    {
        if (maxSize == 0 || maxSize > MaxAllowedSize || (maxSize & (maxSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(maxSize), maxSize, "queue size must be a power of two up to 32768");
        MaxSize = maxSize;
        _segments = new DescriptorSegment[maxSize];
        Reset();
    }

    /// <summary>QueueNumMax: the largest size the driver may choose.</summary>
    public ushort MaxSize { get; }

    // Layout, as programmed by the driver.
    public ushort Size { get; set; }
    public ulong DescTable { get; set; }
    public ulong AvailRing { get; set; }
    public ulong UsedRing { get; set; }
    public bool Ready { get; set; }

    // Negotiated ring features.
    public bool EventIdx { get; set; }
    public bool IndirectDesc { get; set; }

    /// <summary>Index into the avail ring of the next buffer the device will take.</summary>
    public ushort NextAvail { get; private set; }

    /// <summary>The device's used idx (what it last published).</summary>
    public ushort NextUsed { get; private set; }

    /// <summary>Why the queue stopped, or null while it is healthy.</summary>
    public string? BrokenReason { get; private set; }

    public bool IsBroken => BrokenReason is not null;

    private int AvailBytes => 6 + 2 * Size;
    private int UsedBytes => 6 + 8 * Size;

    /// <summary>Back to the state after a device reset (not ready, nothing consumed, default size).</summary>
    public void Reset()
    {
        Size = MaxSize;
        DescTable = AvailRing = UsedRing = 0;
        Ready = false;
        EventIdx = IndirectDesc = false;
        NextAvail = NextUsed = 0;
        _signalledUsed = 0;
        _usedSinceCheck = false;
        BrokenReason = null;
    }

    /// <summary>Marks the queue broken (the first reason is kept). Returns <see cref="PopResult.Broken"/>.</summary>
    public PopResult MarkBroken(string reason)
    {
        BrokenReason ??= reason;
        return PopResult.Broken;
    }

    /// <summary>
    /// Checks the layout the driver programmed (when it sets QueueReady): size a power of two no larger than
    /// <see cref="MaxSize"/>, the alignment of each part, and each part wholly inside guest RAM. A bad layout
    /// breaks the queue; returns false then.
    /// </summary>
    public bool ValidateLayout(GuestMemory memory)
    {
        string? problem =
            Size == 0 || Size > MaxSize || (Size & (Size - 1)) != 0 ? $"queue size {Size} is not a power of two in 1..{MaxSize}"
            : DescTable % 16 != 0 ? $"descriptor table 0x{DescTable:x} is not 16-byte aligned"
            : AvailRing % 2 != 0 ? $"driver (avail) ring 0x{AvailRing:x} is not 2-byte aligned"
            : UsedRing % 4 != 0 ? $"device (used) ring 0x{UsedRing:x} is not 4-byte aligned"
            : !memory.Contains(DescTable, (ulong)(DescriptorBytes * Size)) ? $"descriptor table 0x{DescTable:x}+0x{DescriptorBytes * Size:x} is outside guest RAM"
            : !memory.Contains(AvailRing, (ulong)AvailBytes) ? $"driver (avail) ring 0x{AvailRing:x}+0x{AvailBytes:x} is outside guest RAM"
            : !memory.Contains(UsedRing, (ulong)UsedBytes) ? $"device (used) ring 0x{UsedRing:x}+0x{UsedBytes:x} is outside guest RAM"
            : null;
        if (problem is null) return true;
        MarkBroken(problem);
        return false;
    }

    /// <summary>True when the driver has published buffers the device has not taken yet.</summary>
    public bool HasAvailable(GuestMemory memory) =>
        Ready && !IsBroken && memory.TryGetSpan(AvailRing, AvailBytes, out var avail) && LoadU16(avail, 2) != NextAvail;

    /// <summary>Takes the next available chain, validating all of it. The chain is valid until the next call.</summary>
    public PopResult TryPop(GuestMemory memory, out DescriptorChain chain)
    {
        chain = default;
        if (IsBroken) return PopResult.Broken;
        if (!Ready) return PopResult.Empty;
        if (!memory.TryGetSpan(AvailRing, AvailBytes, out var avail))
            return MarkBroken("driver (avail) ring is outside guest RAM");

        // Volatile read: the ring entries and descriptors below must not be read before idx (acquire).
        ushort availIdx = LoadU16(avail, 2);
        ushort pending = (ushort)(availIdx - NextAvail);
        if (pending == 0) return PopResult.Empty;
        if (pending > Size)
            return MarkBroken($"avail idx {availIdx} is {pending} entries ahead of the device's {NextAvail} (queue size {Size})");

        ushort head = BinaryPrimitives.ReadUInt16LittleEndian(avail[(4 + 2 * (NextAvail & (Size - 1)))..]);
        if (head >= Size)
            return MarkBroken($"avail ring entry {NextAvail} names descriptor {head}, outside the queue of {Size}");
        if (!memory.TryGetSpan(DescTable, DescriptorBytes * Size, out var table))
            return MarkBroken("descriptor table is outside guest RAM");

        Span<byte> current = table;
        int tableEntries = Size, index = head, mainSteps = 0, count = 0, firstWritable = -1;
        bool inIndirect = false;
        ulong readable = 0, writable = 0;
        while (true)
        {
            if (index >= tableEntries)
                return MarkBroken(inIndirect
                    ? $"chain at head {head}: next index {index} is outside its indirect table of {tableEntries}"
                    : $"chain at head {head}: descriptor index {index} is outside the queue of {Size}");
            if (!inIndirect && ++mainSteps > Size)
                return MarkBroken($"chain at head {head} visits more than {Size} descriptors (a loop)");

            // One read of each field: the driver may rewrite the descriptor while we look at it.
            var d = current.Slice(index * DescriptorBytes, DescriptorBytes);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            ushort next = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);

            if ((flags & DescFlagIndirect) != 0)
            {
                if (!IndirectDesc)
                    return MarkBroken($"chain at head {head}: indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated");
                if (inIndirect)
                    return MarkBroken($"chain at head {head}: indirect descriptor inside an indirect table");
                if ((flags & DescFlagNext) != 0)
                    return MarkBroken($"chain at head {head}: descriptor has both INDIRECT and NEXT");
                if (len == 0 || len % DescriptorBytes != 0)
                    return MarkBroken($"chain at head {head}: indirect table length {len} is not a non-zero multiple of 16");
                if (len / DescriptorBytes > Size)
                    return MarkBroken($"chain at head {head}: indirect table of {len / DescriptorBytes} descriptors exceeds the queue size {Size}");
                if (!memory.TryGetSpan(addr, (int)len, out current))
                    return MarkBroken($"chain at head {head}: indirect table 0x{addr:x}+0x{len:x} is outside guest RAM");
                inIndirect = true;
                tableEntries = (int)(len / DescriptorBytes);
                index = 0;
                continue;
            }

            if (++count > Size)
                return MarkBroken($"chain at head {head} has more than {Size} buffers (a loop)");
            bool isWritable = (flags & DescFlagWrite) != 0;
            if (isWritable)
            {
                if (firstWritable < 0) firstWritable = count - 1;
                writable += len;
            }
            else
            {
                if (firstWritable >= 0)
                    return MarkBroken($"chain at head {head}: device-readable buffer after a device-writable one");
                readable += len;
            }
            if (!memory.Contains(addr, len))
                return MarkBroken($"chain at head {head}: buffer 0x{addr:x}+0x{len:x} is outside guest RAM");
            _segments[count - 1] = new DescriptorSegment(addr, len, isWritable);

            if ((flags & DescFlagNext) == 0) break;
            index = next;
        }

        NextAvail++;
        chain = new DescriptorChain(head, _segments, count, firstWritable < 0 ? count : firstWritable, readable, writable);
        return PopResult.Chain;
    }

    /// <summary>
    /// Gives the chain of the last <see cref="TryPop"/> back to the ring untaken (a device that defers it): the next
    /// pop returns it again. Only right after a successful pop, with nothing taken or used since.
    /// </summary>
    public void UndoPop() => NextAvail--;

    /// <summary>Publishes a finished chain: the used element first, then (release) the used idx.</summary>
    public void AddUsed(GuestMemory memory, ushort head, uint writtenLength)
    {
        if (IsBroken) return;
        if (!memory.TryGetSpan(UsedRing, UsedBytes, out var used))
        {
            MarkBroken("device (used) ring is outside guest RAM");
            return;
        }
        var element = used.Slice(4 + 8 * (NextUsed & (Size - 1)), 8);
        BinaryPrimitives.WriteUInt32LittleEndian(element, head);
        BinaryPrimitives.WriteUInt32LittleEndian(element[4..], writtenLength);
        NextUsed++;
        StoreU16(used, 2, NextUsed);
        _usedSinceCheck = true;
    }

    /// <summary>
    /// Called when the device found the queue empty: with EVENT_IDX, asks the driver to notify at the next
    /// buffer (avail_event), then looks again, since the driver may have added one just before. Returns true
    /// when there is more to do.
    /// </summary>
    public bool EnableNotificationAndCheck(GuestMemory memory)
    {
        if (!Ready || IsBroken) return false;
        if (EventIdx)
        {
            if (!memory.TryGetSpan(UsedRing, UsedBytes, out var used)) { MarkBroken("device (used) ring is outside guest RAM"); return false; }
            StoreU16(used, 4 + 8 * Size, NextAvail);
            // Store-load ordering: avail_event must be visible before avail idx is read again.
            Interlocked.MemoryBarrier();
        }
        return HasAvailable(memory);
    }

    /// <summary>
    /// Whether to interrupt the driver for what was used since the last call: always, unless EVENT_IDX's
    /// used_event says the driver does not want it yet, or (without EVENT_IDX) the driver set NO_INTERRUPT.
    /// </summary>
    public bool NeedsInterrupt(GuestMemory memory)
    {
        if (!_usedSinceCheck || IsBroken) return false;
        _usedSinceCheck = false;
        ushort old = _signalledUsed;
        _signalledUsed = NextUsed;
        // Store-load ordering: our used idx must be visible before we read the driver's suppression fields.
        Interlocked.MemoryBarrier();
        if (!memory.TryGetSpan(AvailRing, AvailBytes, out var avail)) return true;
        if (EventIdx)
        {
            ushort usedEvent = LoadU16(avail, 4 + 2 * Size);
            return (ushort)(NextUsed - usedEvent - 1) < (ushort)(NextUsed - old);
        }
        return (LoadU16(avail, 0) & AvailFlagNoInterrupt) == 0;
    }

    // The ring fields are naturally aligned (checked in ValidateLayout) and x86 is little-endian, so a
    // volatile ushort access is one atomic, ordered load or store.
    private static ushort LoadU16(Span<byte> span, int offset) =>
        Volatile.Read(ref MemoryMarshal.Cast<byte, ushort>(span.Slice(offset, 2))[0]);

    private static void StoreU16(Span<byte> span, int offset, ushort value) =>
        Volatile.Write(ref MemoryMarshal.Cast<byte, ushort>(span.Slice(offset, 2))[0], value);

    /// <summary>The device-side progress and layout, for snapshots.</summary>
    public void Save(BinaryWriter w)
    {
        w.Write(Size); w.Write(DescTable); w.Write(AvailRing); w.Write(UsedRing); w.Write(Ready);
        w.Write(EventIdx); w.Write(IndirectDesc); w.Write(NextAvail); w.Write(NextUsed);
        w.Write(_signalledUsed); w.Write(_usedSinceCheck); w.Write(BrokenReason ?? ""); w.Write(BrokenReason is not null);
    }

    /// <summary>Reads what <see cref="Save"/> wrote, into a snapshot of values applied by <see cref="Apply"/>.</summary>
    internal static QueueState Load(BinaryReader r, ushort maxSize)
    {
        var s = new QueueState(r.ReadUInt16(), r.ReadUInt64(), r.ReadUInt64(), r.ReadUInt64(), r.ReadBoolean(),
            r.ReadBoolean(), r.ReadBoolean(), r.ReadUInt16(), r.ReadUInt16(), r.ReadUInt16(), r.ReadBoolean(), r.ReadString(), r.ReadBoolean());
        if (s.Size == 0 || s.Size > maxSize || (s.Size & (s.Size - 1)) != 0)
            throw new InvalidDataException($"virtqueue size {s.Size} is not a power of two in 1..{maxSize}");
        return s;
    }

    internal void Apply(QueueState s)
    {
        Size = s.Size; DescTable = s.DescTable; AvailRing = s.AvailRing; UsedRing = s.UsedRing; Ready = s.Ready;
        EventIdx = s.EventIdx; IndirectDesc = s.IndirectDesc; NextAvail = s.NextAvail; NextUsed = s.NextUsed;
        _signalledUsed = s.SignalledUsed; _usedSinceCheck = s.UsedSinceCheck;
        BrokenReason = s.IsBroken ? s.BrokenReason : null;
    }

    internal readonly record struct QueueState(ushort Size, ulong DescTable, ulong AvailRing, ulong UsedRing, bool Ready,
        bool EventIdx, bool IndirectDesc, ushort NextAvail, ushort NextUsed, ushort SignalledUsed, bool UsedSinceCheck,
        string BrokenReason, bool IsBroken);
}
