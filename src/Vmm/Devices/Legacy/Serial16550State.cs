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
