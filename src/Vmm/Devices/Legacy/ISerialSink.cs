namespace FireSharp.Devices.Legacy;

/// <summary>
/// Where the bytes a guest transmits through a UART go.
/// </summary>
/// <remarks>
/// <see cref="Write"/> is called on a vCPU thread, once per guest write that transmits bytes,
/// and never while the device holds its register lock. Implementations must not throw and must
/// not block for long: a sink whose consumer is slow should buffer (bounded) and drop, as
/// <see cref="StreamSerialSink"/> does.
/// </remarks>
public interface ISerialSink
{
    /// <summary>Accepts transmitted bytes. The span is only valid during the call.</summary>
    void Write(ReadOnlySpan<byte> data);
}

/// <summary>A sink that discards everything (console disabled).</summary>
public sealed class NullSerialSink : ISerialSink
{
    public static readonly NullSerialSink Instance = new();

    private NullSerialSink() { }

    public void Write(ReadOnlySpan<byte> data) { }
}

/// <summary>Copies every write to several sinks, in order (for example stdout and a log file).</summary>
public sealed class TeeSerialSink : ISerialSink
{
    private readonly ISerialSink[] _sinks;

    public TeeSerialSink(params ISerialSink[] sinks)
    {
        ArgumentNullException.ThrowIfNull(sinks);
        _sinks = (ISerialSink[])sinks.Clone();
    }

    public void Write(ReadOnlySpan<byte> data)
    {
        foreach (var sink in _sinks)
        {
            sink.Write(data);
        }
    }
}
