namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// The bytes of one direction of a <see cref="VsockConnection"/> waiting for the other side: a queue of at most
/// <see cref="Capacity"/> bytes, its array allocated on first use and dropped by <see cref="Release"/>.
/// </summary>
internal sealed class VsockBuffer(int capacity)
{
    private byte[]? _bytes;
    private int _start;

    public int Capacity { get; } = capacity;

    public int Count { get; private set; }

    /// <summary>The queued bytes, oldest first (valid until the next change; a released array stays alive while referenced).</summary>
    public ReadOnlySpan<byte> Queued => _bytes.AsSpan(_start, Count);

    /// <summary>Queues <paramref name="data"/>; the caller keeps <see cref="Count"/> within <see cref="Capacity"/>.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (Count + data.Length > Capacity) throw new InvalidOperationException($"{data.Length} bytes do not fit in {Capacity - Count}");
        _bytes ??= new byte[Capacity];
        if (_start + Count + data.Length > Capacity)
        {
            _bytes.AsSpan(_start, Count).CopyTo(_bytes);
            _start = 0;
        }
        data.CopyTo(_bytes.AsSpan(_start + Count));
        Count += data.Length;
    }

    /// <summary>Room for a read of at most <paramref name="max"/> bytes into the empty buffer; <see cref="Commit"/> what was read.</summary>
    public Span<byte> Space(int max)
    {
        if (Count != 0) throw new InvalidOperationException("the buffer is not empty");
        _bytes ??= new byte[Capacity];
        _start = 0;
        return _bytes.AsSpan(0, Math.Min(max, Capacity));
    }

    public void Commit(int count) => Count = count;

    /// <summary>Forgets the oldest <paramref name="count"/> bytes (they were delivered).</summary>
    public void Consume(int count)
    {
        _start += count;
        Count -= count;
        if (Count == 0) _start = 0;
    }

    /// <summary>Forgets every queued byte.</summary>
    public void Clear()
    {
        Count = 0;
        _start = 0;
    }

    /// <summary>Forgets every byte and frees the array.</summary>
    public void Release()
    {
        Clear();
        _bytes = null;
    }
}
