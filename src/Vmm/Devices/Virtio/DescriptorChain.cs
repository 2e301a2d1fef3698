namespace FireSharp.Devices.Virtio;

/// <summary>One buffer of a descriptor chain: a guest range the device may read, or write.</summary>
public readonly record struct DescriptorSegment(ulong Address, uint Length, bool Writable);

/// <summary>A guest range of at most <see cref="DescriptorChain.MaxPiece"/> bytes, found by <see cref="DescriptorChain.Ranges"/>.</summary>
public readonly record struct GuestRange(ulong Address, int Length);

/// <summary>
/// A validated descriptor chain popped from a <see cref="Virtqueue"/>: every segment lies inside guest RAM,
/// device-readable segments come before device-writable ones, and indirect tables are already flattened.
/// The segments live in a buffer owned by the queue, so a chain is valid only until the next pop.
/// </summary>
public readonly struct DescriptorChain
{
    /// <summary>Largest piece <see cref="Ranges"/> hands out (a span's length is an int).</summary>
    public const int MaxPiece = 1 << 30;

    private readonly DescriptorSegment[]? _segments;

    internal DescriptorChain(ushort head, DescriptorSegment[] segments, int count, int firstWritable, ulong readable, ulong writable)
    {
        Head = head;
        _segments = segments;
        Count = count;
        FirstWritable = firstWritable;
        ReadableLength = readable;
        WritableLength = writable;
    }

    /// <summary>Index of the chain's head in the descriptor table (what goes into the used ring).</summary>
    public ushort Head { get; }

    /// <summary>Number of buffer segments (indirect-table pointers are not counted).</summary>
    public int Count { get; }

    /// <summary>Index of the first device-writable segment; <see cref="Count"/> when there is none.</summary>
    public int FirstWritable { get; }

    /// <summary>Total bytes of the device-readable segments.</summary>
    public ulong ReadableLength { get; }

    /// <summary>Total bytes of the device-writable segments.</summary>
    public ulong WritableLength { get; }

    public ReadOnlySpan<DescriptorSegment> Segments => _segments.AsSpan(0, Count);

    /// <summary>
    /// The guest ranges holding bytes [<paramref name="offset"/>, <paramref name="offset"/>+<paramref name="length"/>)
    /// of the readable (or writable) part of the chain, in order, each at most <see cref="MaxPiece"/> bytes.
    /// Ranges past the end of that part are simply not produced.
    /// </summary>
    public RangeEnumerable Ranges(bool writable, ulong offset, ulong length) =>
        new(writable ? Segments[FirstWritable..] : Segments[..FirstWritable], offset, length);

    /// <summary>Copies up to destination.Length readable bytes starting at <paramref name="offset"/>; returns how many.</summary>
    public int CopyFromReadable(Memory.GuestMemory memory, ulong offset, Span<byte> destination)
    {
        int done = 0;
        foreach (var r in Ranges(false, offset, (ulong)destination.Length))
        {
            memory.Read(r.Address, destination.Slice(done, r.Length));
            done += r.Length;
        }
        return done;
    }

    /// <summary>Copies up to source.Length bytes into the writable part starting at <paramref name="offset"/>; returns how many.</summary>
    public int CopyToWritable(Memory.GuestMemory memory, ulong offset, ReadOnlySpan<byte> source)
    {
        int done = 0;
        foreach (var r in Ranges(true, offset, (ulong)source.Length))
        {
            memory.Write(r.Address, source.Slice(done, r.Length));
            done += r.Length;
        }
        return done;
    }

    public readonly ref struct RangeEnumerable(ReadOnlySpan<DescriptorSegment> segments, ulong offset, ulong length)
    {
        private readonly ReadOnlySpan<DescriptorSegment> _segments = segments;
        public RangeEnumerator GetEnumerator() => new(_segments, offset, length);
    }

    public ref struct RangeEnumerator
    {
        private readonly ReadOnlySpan<DescriptorSegment> _segments;
        private int _index;
        private ulong _skip;       // bytes still to skip before the requested window
        private ulong _remaining;  // bytes of the window not yet produced
        private ulong _inSegment;  // offset inside the current segment

        internal RangeEnumerator(ReadOnlySpan<DescriptorSegment> segments, ulong offset, ulong length)
        {
            _segments = segments;
            _skip = offset;
            _remaining = length;
            Current = default;
        }

        public GuestRange Current { get; private set; }

        public bool MoveNext()
        {
            while (_remaining > 0 && _index < _segments.Length)
            {
                var s = _segments[_index];
                ulong left = s.Length - _inSegment;
                if (_skip >= left)
                {
                    _skip -= left;
                    _index++;
                    _inSegment = 0;
                    continue;
                }
                _inSegment += _skip;
                left -= _skip;
                _skip = 0;
                ulong take = Math.Min(Math.Min(left, _remaining), MaxPiece);
                Current = new GuestRange(s.Address + _inSegment, (int)take);
                _inSegment += take;
                _remaining -= take;
                if (_inSegment == s.Length)
                {
                    _index++;
                    _inSegment = 0;
                }
                return true;
            }
            return false;
        }
    }
}
