using System.Text;
using FireSharp.Devices.Legacy;

namespace FireSharp.Vm;

/// <summary>
/// Sees a Linux guest power off. Without ACPI, `poweroff` ends in the kernel halting every CPU with
/// interrupts off, which a VMM with an in-kernel irqchip never sees as an exit. The kernel prints
/// "reboot: Power down" (or "reboot: System halted" for halt) at KERN_EMERG just before, so the
/// console is watched for those lines and the VM is ended with the right reason. A guest can only
/// end itself this way, which it can always do anyway (reset, triple fault).
/// </summary>
public sealed class PowerDownWatcher(ISerialSink inner, Action<VmExit> onPowerDown) : ISerialSink
{
    private static readonly (byte[] Line, VmExitKind Kind, string Reason)[] s_markers =
    [
        (Encoding.ASCII.GetBytes("reboot: Power down"), VmExitKind.PowerOff, "guest powered off (kernel: \"reboot: Power down\")"),
        (Encoding.ASCII.GetBytes("reboot: System halted"), VmExitKind.PowerOff, "guest halted (kernel: \"reboot: System halted\")"),
    ];

    // The longest marker minus one byte of the previous write, so markers split across writes are found.
    private readonly byte[] _carry = new byte[32];
    private int _carryLength;
    private int _fired;
    private readonly Lock _scan = new();

    public void Write(ReadOnlySpan<byte> data)
    {
        inner.Write(data);
        if (Volatile.Read(ref _fired) != 0) return;
        lock (_scan) Scan(data);
    }

    private void Scan(ReadOnlySpan<byte> data)
    {
        Span<byte> window = stackalloc byte[_carryLength + Math.Min(data.Length, 4096)];
        _carry.AsSpan(0, _carryLength).CopyTo(window);
        data[^Math.Min(data.Length, 4096)..].CopyTo(window[_carryLength..]);
        foreach (var (line, kind, reason) in s_markers)
        {
            if (window.IndexOf(line) < 0) continue;
            if (Interlocked.Exchange(ref _fired, 1) == 0) onPowerDown(new VmExit(kind, reason));
            return;
        }
        _carryLength = Math.Min(window.Length, _carry.Length);
        window[^_carryLength..].CopyTo(_carry);
    }
}
