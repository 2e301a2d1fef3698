namespace FireSharp.Devices;

/// <summary>
/// A device mapped into a port-I/O or MMIO range. Offsets are relative to the start of the range
/// the device was registered at. Devices are plain state machines: they never touch the run loop,
/// only their registers, guest memory (if given one) and their interrupt line.
/// </summary>
public interface IBusDevice
{
    /// <summary>Guest read of <paramref name="data"/>.Length bytes (1, 2, 4 or 8) at <paramref name="offset"/>.</summary>
    void Read(ulong offset, Span<byte> data);

    /// <summary>Guest write of <paramref name="data"/>.Length bytes (1, 2, 4 or 8) at <paramref name="offset"/>.</summary>
    void Write(ulong offset, ReadOnlySpan<byte> data);
}

/// <summary>An interrupt line into the guest's interrupt controller.</summary>
public interface IInterruptLine
{
    /// <summary>Drives the line to the given level (used by level-style ISA devices such as the 16550).</summary>
    void SetLevel(bool high);

    /// <summary>Sends one edge (used by virtio-mmio and other edge-triggered sources).</summary>
    void Pulse();
}

/// <summary>An interrupt line that goes nowhere; for devices under test and for disabled lines.</summary>
public sealed class NullInterruptLine : IInterruptLine
{
    public static readonly NullInterruptLine Instance = new();
    public void SetLevel(bool high) { }
    public void Pulse() { }
}
