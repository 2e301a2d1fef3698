namespace FireSharp.Devices.Legacy;

/// <summary>
/// Everything a <see cref="Serial16550"/> needs to resume where it was, for snapshots. Equality
/// compares <see cref="PendingInput"/> by content.
/// </summary>
public sealed record Serial16550State
{
    /// <summary>Interrupt enable register (bits 0–3).</summary>
    public byte Ier { get; init; }

    /// <summary>Line control register, including DLAB (bit 7).</summary>
    public byte Lcr { get; init; }

    /// <summary>Modem control register (bits 0–4, bit 4 = loopback).</summary>
    public byte Mcr { get; init; }

    /// <summary>The last FIFO control value that sticks (bits 0, 3, 6, 7; bit 0 = FIFOs enabled).</summary>
    public byte Fcr { get; init; }

    /// <summary>
    /// Line status register as a read would return it. On restore only the error bits
    /// (overrun, parity, framing, break: bits 1–4) are taken; data-ready and the transmitter bits
    /// are derived from <see cref="PendingInput"/> and the (always empty) transmitter.
    /// </summary>
    public byte Lsr { get; init; }

    /// <summary>Modem status register: status bits 4–7 and the delta bits 0–3.</summary>
    public byte Msr { get; init; }

    /// <summary>Scratch register.</summary>
    public byte Scr { get; init; }

    /// <summary>Divisor latch, low byte.</summary>
    public byte Dll { get; init; }

    /// <summary>Divisor latch, high byte.</summary>
    public byte Dlm { get; init; }

    /// <summary>The transmitter-empty interrupt is pending (not yet cleared by an IIR read or THR write).</summary>
    public bool ThrEmptyInterruptPending { get; init; }

    /// <summary>Received bytes the guest has not read yet, oldest first.</summary>
    public byte[] PendingInput { get; init; } = [];

    public bool Equals(Serial16550State? other) =>
        other is not null
        && Ier == other.Ier && Lcr == other.Lcr && Mcr == other.Mcr && Fcr == other.Fcr
        && Lsr == other.Lsr && Msr == other.Msr && Scr == other.Scr && Dll == other.Dll
        && Dlm == other.Dlm && ThrEmptyInterruptPending == other.ThrEmptyInterruptPending
        && PendingInput.AsSpan().SequenceEqual(other.PendingInput);

    /// <summary>Snapshot encoding, format 1: the nine registers, the THRE-pending flag, then the pending input (u32 length, bytes).</summary>
    public byte[] Encode()
    {
        var ms = new MemoryStream(16 + PendingInput.Length);
        using (var w = new BinaryWriter(ms))
        {
            w.Write(FormatVersion);
            w.Write(Ier); w.Write(Lcr); w.Write(Mcr); w.Write(Fcr); w.Write(Lsr);
            w.Write(Msr); w.Write(Scr); w.Write(Dll); w.Write(Dlm);
            w.Write(ThrEmptyInterruptPending);
            w.Write(PendingInput.Length);
            w.Write(PendingInput);
        }
        return ms.ToArray();
    }

    /// <summary>Parses <see cref="Encode"/>'s output; anything malformed throws <see cref="InvalidDataException"/>.</summary>
    public static Serial16550State Decode(ReadOnlySpan<byte> data)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(data.ToArray()));
            byte version = r.ReadByte();
            if (version != FormatVersion) throw new InvalidDataException($"16550 state format {version}, expected {FormatVersion}");
            var state = new Serial16550State
            {
                Ier = r.ReadByte(), Lcr = r.ReadByte(), Mcr = r.ReadByte(), Fcr = r.ReadByte(), Lsr = r.ReadByte(),
                Msr = r.ReadByte(), Scr = r.ReadByte(), Dll = r.ReadByte(), Dlm = r.ReadByte(),
                ThrEmptyInterruptPending = ReadBool(r),
            };
            int count = r.ReadInt32();
            if (count < 0 || count > r.BaseStream.Length - r.BaseStream.Position)
                throw new InvalidDataException($"16550 state: bad pending-input length {count}");
            state = state with { PendingInput = r.ReadBytes(count) };
            if (r.BaseStream.Position != r.BaseStream.Length) throw new InvalidDataException("16550 state: trailing bytes");
            return state;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("16550 state is truncated", e);
        }
    }

    private const byte FormatVersion = 1;

    private static bool ReadBool(BinaryReader r) => r.ReadByte() switch
    {
        0 => false,
        1 => true,
        var b => throw new InvalidDataException($"16550 state: bad flag byte {b}"),
    };

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Ier);
        hash.Add(Lcr);
        hash.Add(Mcr);
        hash.Add(Fcr);
        hash.Add(Lsr);
        hash.Add(Msr);
        hash.Add(Scr);
        hash.Add(Dll);
        hash.Add(Dlm);
        hash.Add(ThrEmptyInterruptPending);
        hash.AddBytes(PendingInput);
        return hash.ToHashCode();
    }
}
