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
