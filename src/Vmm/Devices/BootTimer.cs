using System.Diagnostics;

namespace FireSharp.Devices;

/// <summary>
/// Firecracker-compatible boot-done signal: the guest writes the byte 123 to offset 0 of this MMIO page
/// (0xC0000000) when userspace is up, and the VMM timestamps it. Any other access is ignored.
/// Whoever waits for the signal awaits <see cref="Done"/>: nothing needs to poll.
/// </summary>
public sealed class BootTimer(long startTimestamp, Action<TimeSpan>? onBootDone = null) : IBusDevice, IStatefulDevice
{
    public const ulong Address = 0xC000_0000;
    public const ulong Length = 0x1000;
    public const byte MagicValue = 123;

    private long _doneTicks = -1;
    private readonly TaskCompletionSource<TimeSpan> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Time from <paramref name="startTimestamp"/> to the first boot-done write, or null.</summary>
    public TimeSpan? BootDone => Interlocked.Read(ref _doneTicks) is var t and >= 0 ? TimeSpan.FromTicks(t) : null;

    /// <summary>
    /// Completes with <see cref="BootDone"/> at the first boot-done write, or when restored state says boot was
    /// done; a guest that never signals leaves it pending. Continuations run asynchronously, never on the vCPU.
    /// </summary>
    public Task<TimeSpan> Done => _done.Task;

    public void Read(ulong offset, Span<byte> data) => data.Clear();

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset != 0 || data.Length == 0 || data[0] != MagicValue) return;
        var elapsed = Stopwatch.GetElapsedTime(startTimestamp);
        if (Interlocked.CompareExchange(ref _doneTicks, elapsed.Ticks, -1) != -1) return;
        onBootDone?.Invoke(elapsed);
        _done.TrySetResult(elapsed);
    }

    /// <summary>For snapshots: the recorded boot-done time in ticks, or -1.</summary>
    public long State
    {
        get => Interlocked.Read(ref _doneTicks);
        set
        {
            Interlocked.Exchange(ref _doneTicks, value);
            if (value >= 0) _done.TrySetResult(TimeSpan.FromTicks(value));
        }
    }

    /// <summary>Snapshot id ("boot-timer").</summary>
    public string StateId => "boot-timer";

    /// <summary>Format 1: one byte 1, then the boot-done ticks (i64 little-endian, -1 = not yet).</summary>
    public byte[] SaveState()
    {
        var data = new byte[9];
        data[0] = 1;
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(1), State);
        return data;
    }

    public void RestoreState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 9 || state[0] != 1)
            throw new InvalidDataException($"boot timer state: expected format 1 and 9 bytes, got {(state.IsEmpty ? "nothing" : $"format {state[0]}, {state.Length} bytes")}");
        long ticks = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(state[1..]);
        if (ticks < -1) throw new InvalidDataException($"boot timer state: bad ticks {ticks}");
        State = ticks;
    }
}
