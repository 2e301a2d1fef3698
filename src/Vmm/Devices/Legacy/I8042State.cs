namespace FireSharp.Devices.Legacy;

/// <summary>Who put a byte into the i8042 output buffer; decides status bit 5 and IRQ 1.</summary>
public enum I8042Source : byte
{
    /// <summary>A reply to a controller command (port 0x64); raises no interrupt.</summary>
    Controller = 0,

    /// <summary>Keyboard data (scancodes, keyboard replies); raises IRQ 1 if the command byte enables it.</summary>
    Keyboard = 1,

    /// <summary>Auxiliary (mouse) port data; sets status bit 5. No IRQ 12 is modelled.</summary>
    Aux = 2,
}

/// <summary>One byte waiting in the i8042 output buffer.</summary>
public readonly record struct I8042OutputByte(byte Value, I8042Source Source);

/// <summary>
/// Everything an <see cref="I8042"/> needs to resume where it was, for snapshots. Equality compares
/// <see cref="Output"/> by content.
/// </summary>
public sealed record I8042State
{
    /// <summary>The controller command byte ("CTR", read with 0x20, written with 0x60).</summary>
    public byte Control { get; init; }

    /// <summary>The controller output port (read with 0xD0, written with 0xD1).</summary>
    public byte OutputPort { get; init; }

    /// <summary>A controller command waiting for its data byte on port 0x60, or 0.</summary>
    public byte PendingCommand { get; init; }

    /// <summary>A keyboard command waiting for its parameter byte on port 0x60, or 0.</summary>
    public byte PendingKeyboardCommand { get; init; }

    /// <summary>The last write went to port 0x64 (status bit 3).</summary>
    public bool LastWriteWasCommand { get; init; }

    /// <summary>What port 0x60 reads while the output buffer is empty (the last byte read).</summary>
    public byte LastOutput { get; init; }

    /// <summary>Bytes waiting in the output buffer, oldest first.</summary>
    public I8042OutputByte[] Output { get; init; } = [];

    public bool Equals(I8042State? other) =>
        other is not null
        && Control == other.Control && OutputPort == other.OutputPort
        && PendingCommand == other.PendingCommand && PendingKeyboardCommand == other.PendingKeyboardCommand
        && LastWriteWasCommand == other.LastWriteWasCommand && LastOutput == other.LastOutput
        && Output.AsSpan().SequenceEqual(other.Output);

    /// <summary>Snapshot encoding, format 1: the six scalar fields, then the output buffer (u32 count, value/source pairs).</summary>
    public byte[] Encode()
    {
        var ms = new MemoryStream(16 + 2 * Output.Length);
        using (var w = new BinaryWriter(ms))
        {
            w.Write(FormatVersion);
            w.Write(Control); w.Write(OutputPort); w.Write(PendingCommand); w.Write(PendingKeyboardCommand);
            w.Write(LastWriteWasCommand); w.Write(LastOutput);
            w.Write(Output.Length);
            foreach (var b in Output)
            {
                w.Write(b.Value);
                w.Write((byte)b.Source);
            }
        }
        return ms.ToArray();
    }

    /// <summary>Parses <see cref="Encode"/>'s output; anything malformed throws <see cref="InvalidDataException"/>.</summary>
    public static I8042State Decode(ReadOnlySpan<byte> data)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(data.ToArray()));
            byte version = r.ReadByte();
            if (version != FormatVersion) throw new InvalidDataException($"i8042 state format {version}, expected {FormatVersion}");
            var state = new I8042State
            {
                Control = r.ReadByte(), OutputPort = r.ReadByte(), PendingCommand = r.ReadByte(),
                PendingKeyboardCommand = r.ReadByte(),
                LastWriteWasCommand = r.ReadByte() switch { 0 => false, 1 => true, var b => throw new InvalidDataException($"i8042 state: bad flag byte {b}") },
                LastOutput = r.ReadByte(),
            };
            int count = r.ReadInt32();
            if (count < 0 || count > (r.BaseStream.Length - r.BaseStream.Position) / 2)
                throw new InvalidDataException($"i8042 state: bad output count {count}");
            var output = new I8042OutputByte[count];
            for (int i = 0; i < count; i++)
            {
                byte value = r.ReadByte(), source = r.ReadByte();
                if (source > (byte)I8042Source.Aux) throw new InvalidDataException($"i8042 state: bad byte source {source}");
                output[i] = new I8042OutputByte(value, (I8042Source)source);
            }
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException("i8042 state: trailing bytes");
            return state with { Output = output };
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("i8042 state is truncated", e);
        }
    }

    private const byte FormatVersion = 1;

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Control);
        hash.Add(OutputPort);
        hash.Add(PendingCommand);
        hash.Add(PendingKeyboardCommand);
        hash.Add(LastWriteWasCommand);
        hash.Add(LastOutput);
        foreach (var b in Output)
        {
            hash.Add(b);
        }

        return hash.ToHashCode();
    }
}
