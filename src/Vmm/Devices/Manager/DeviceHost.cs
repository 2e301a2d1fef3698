using FireSharp.Devices.Legacy;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Manager;

/// <summary>
/// What a VM offers its devices, as plain delegates so that the devices and their manager do not depend on the
/// VM classes: guest memory, the two buses, interrupt lines and (where KVM has them) ioeventfd and irqfd.
/// </summary>
public sealed record DeviceHost
{
    public required GuestMemory Memory { get; init; }

    /// <summary>Registers an MMIO window (address, length, device, name).</summary>
    public required Action<ulong, ulong, IBusDevice, string> RegisterMmio { get; init; }

    /// <summary>Registers a port-I/O range (first port, count, device, name).</summary>
    public required Action<ulong, ulong, IBusDevice, string> RegisterPort { get; init; }

    /// <summary>An interrupt line driven with KVM_IRQ_LINE (the fallback when irqfd is unavailable, and the legacy devices' lines).</summary>
    public required Func<uint, IInterruptLine> InterruptLine { get; init; }

    /// <summary>KVM_IOEVENTFD: signal eventfd (fd) on a 4-byte guest write of value (datamatch) at address. Null = not available.</summary>
    public Action<int, ulong, uint>? AssignIoeventfd { get; init; }

    /// <summary>KVM_IRQFD: an edge on the GSI when eventfd (fd) is signalled. Null = not available.</summary>
    public Action<int, uint>? AssignIrqfd { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;
}

/// <summary>
/// What the machine's standard devices (COM1, the i8042, the boot timer) report to the VM: they are built by the
/// <see cref="DeviceManager"/> like every other device, and these are the VM's side of them.
/// </summary>
public sealed record StandardDeviceHooks
{
    /// <summary>Where COM1's output goes (the VM watches it for a guest power-off).</summary>
    public ISerialSink Console { get; init; } = NullSerialSink.Instance;

    /// <summary>The guest reset the machine through the i8042 (reboot=k).</summary>
    public Action GuestReset { get; init; } = () => { };

    /// <summary><see cref="System.Diagnostics.Stopwatch"/> timestamp the boot timer measures from.</summary>
    public long BootStart { get; init; }

    /// <summary>The guest signalled boot-done (time since <see cref="BootStart"/>).</summary>
    public Action<TimeSpan>? BootDone { get; init; }
}
