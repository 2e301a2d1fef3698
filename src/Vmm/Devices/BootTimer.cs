using System.Diagnostics;

namespace FireSharp.Devices;

/// <summary>
/// Firecracker-compatible boot-done signal: the guest writes the byte 123 to offset 0 of this MMIO page
/// (0xC0000000) when userspace is up, and the VMM timestamps it. Any other access is ignored.
/// </summary>
public sealed class BootTimer(long startTimestamp, Action<TimeSpan>? onBootDone = null) : IBusDevice
{
    public const ulong Address = 0xC000_0000;
    public const ulong Length = 0x1000;
    public const byte MagicValue = 123;

    private long _doneTicks = -1;

    /// <summary>Time from <paramref name="startTimestamp"/> to the first boot-done write, or null.</summary>
    public TimeSpan? BootDone => Interlocked.Read(ref _doneTicks) is var t and >= 0 ? TimeSpan.FromTicks(t) : null;

    public void Read(ulong offset, Span<byte> data) => data.Clear();

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset != 0 || data.Length == 0 || data[0] != MagicValue) return;
        var elapsed = Stopwatch.GetElapsedTime(startTimestamp);
        if (Interlocked.CompareExchange(ref _doneTicks, elapsed.Ticks, -1) == -1)
            onBootDone?.Invoke(elapsed);
    }

    /// <summary>For snapshots: the recorded boot-done time in ticks, or -1.</summary>
    public long State { get => Interlocked.Read(ref _doneTicks); set => Interlocked.Exchange(ref _doneTicks, value); }
}
