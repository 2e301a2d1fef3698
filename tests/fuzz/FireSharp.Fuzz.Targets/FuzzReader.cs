using System.Buffers.Binary;

namespace FireSharp.Fuzz;

/// <summary>Reads little-endian values from a fuzz input; past its end every value is zero, so any input decodes.</summary>
public sealed class FuzzReader(byte[] input)
{
    private int _at;

    public int Remaining => Math.Max(0, input.Length - _at);

    public byte U8() => _at < input.Length ? input[_at++] : (byte)0;

    public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));

    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

    public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

    /// <summary>The rest of the input.</summary>
    public ReadOnlySpan<byte> Rest()
    {
        var rest = _at < input.Length ? input.AsSpan(_at) : [];
        _at = input.Length;
        return rest;
    }

    private ReadOnlySpan<byte> Take(int n)
    {
        Span<byte> buffer = new byte[n];
        for (int i = 0; i < n; i++) buffer[i] = U8();
        return buffer;
    }
}
