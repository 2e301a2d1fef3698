using FireSharp.Devices;

namespace FireSharp.Vm;

/// <summary>
/// An address space (port I/O or MMIO) of non-overlapping device ranges, looked up by binary search.
/// Registration happens before the vCPUs start; lookups are lock-free over an immutable array.
/// </summary>
public sealed class DeviceBus(string name)
{
    private readonly record struct Entry(ulong Start, ulong Length, IBusDevice Device, string Name);

    private Entry[] _entries = [];

    public string Name { get; } = name;

    public void Register(ulong start, ulong length, IBusDevice device, string deviceName)
    {
        if (length == 0 || start + length < start)
            throw new ArgumentOutOfRangeException(nameof(length), $"{Name}: invalid range for {deviceName}");
        foreach (var e in _entries)
        {
            if (start < e.Start + e.Length && e.Start < start + length)
                throw new ArgumentException($"{Name}: {deviceName} at 0x{start:x}+0x{length:x} overlaps {e.Name} at 0x{e.Start:x}+0x{e.Length:x}");
        }
        _entries = [.. _entries.Append(new Entry(start, length, device, deviceName)).OrderBy(e => e.Start)];
    }

    /// <summary>Finds the device covering <paramref name="address"/>; the offset is relative to its range.</summary>
    public bool TryFind(ulong address, out IBusDevice device, out ulong offset)
    {
        var entries = _entries;
        int lo = 0, hi = entries.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ref readonly var e = ref entries[mid];
            if (address < e.Start) hi = mid - 1;
            else if (address - e.Start >= e.Length) lo = mid + 1;
            else
            {
                device = e.Device;
                offset = address - e.Start;
                return true;
            }
        }
        device = null!;
        offset = 0;
        return false;
    }

    /// <summary>Dispatches a read; returns false (and leaves <paramref name="data"/> untouched) when no device claims it.</summary>
    public bool Read(ulong address, Span<byte> data)
    {
        if (!TryFind(address, out var device, out var offset)) return false;
        device.Read(offset, data);
        return true;
    }

    public bool Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (!TryFind(address, out var device, out var offset)) return false;
        device.Write(offset, data);
        return true;
    }
}
