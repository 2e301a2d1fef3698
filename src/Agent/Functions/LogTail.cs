using System.Text;

namespace FireSharp.Agent.Functions;

/// <summary>
/// The last <see cref="Capacity"/> bytes written to it (a ring): what the runtime and extensions
/// printed during init or during one invocation. Memory stays at the capacity however much they print.
/// </summary>
internal sealed class LogTail(int capacity = LogTail.DefaultCapacity)
{
    public const int DefaultCapacity = 4096;

    private readonly object _gate = new();
    private readonly byte[] _ring = new byte[capacity];
    private long _written;

    public int Capacity => _ring.Length;

    /// <summary>Bytes appended since the last <see cref="Clear"/> (all of them, not only those kept).</summary>
    public long TotalBytes
    {
        get { lock (_gate) return _written; }
    }

    public void Append(ReadOnlySpan<byte> data)
    {
        lock (_gate)
        {
            _written += data.Length;
            if (data.Length >= _ring.Length)
            {
                data[^_ring.Length..].CopyTo(_ring);
                // Keep the ring's start at index (written % capacity).
                int shift = (int)(_written % _ring.Length);
                if (shift != 0) Rotate(_ring, shift);
                return;
            }
            int start = (int)((_written - data.Length) % _ring.Length);
            int first = Math.Min(data.Length, _ring.Length - start);
            data[..first].CopyTo(_ring.AsSpan(start));
            data[first..].CopyTo(_ring);
        }
    }

    public void Clear()
    {
        lock (_gate) _written = 0;
    }

    /// <summary>The kept bytes, oldest first.</summary>
    public byte[] ToArray()
    {
        lock (_gate)
        {
            if (_written <= _ring.Length) return _ring.AsSpan(0, (int)_written).ToArray();
            int start = (int)(_written % _ring.Length);
            var result = new byte[_ring.Length];
            _ring.AsSpan(start).CopyTo(result);
            _ring.AsSpan(0, start).CopyTo(result.AsSpan(_ring.Length - start));
            return result;
        }
    }

    /// <summary>The kept bytes as text (a multi-byte character cut at the start becomes U+FFFD).</summary>
    public override string ToString() => Encoding.UTF8.GetString(ToArray());

    // Places element i at (i + shift) % n.
    private static void Rotate(byte[] ring, int shift)
    {
        var copy = ring.AsSpan().ToArray();
        for (int i = 0; i < ring.Length; i++) ring[(i + shift) % ring.Length] = copy[i];
    }
}
