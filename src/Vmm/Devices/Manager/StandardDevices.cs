using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;

namespace FireSharp.Devices.Manager;

/// <summary>
/// The devices every microVM has, built by the <see cref="DeviceManager"/> like every other device: COM1
/// (ports 0x3f8-0x3ff, IRQ 4), the i8042 (ports 0x60-0x64, IRQ 1; only so that a guest reset becomes a VM exit)
/// and the boot timer (MMIO 0xC0000000). Their IRQs lie below the virtio GSIs (<see cref="VirtioMmioLayout.FirstGsi"/>),
/// and the boot timer's page below the first virtio-mmio window.
/// </summary>
public sealed class StandardDevices
{
    /// <summary>What snapshots record for them, in this order.</summary>
    public static IReadOnlyList<DeviceDescriptor> Descriptors { get; } =
    [
        new("com1", "serial16550"),
        new("i8042", "i8042"),
        new("boot-timer", "boot-timer"),
    ];

    private StandardDevices(Serial16550 serial, I8042 keyboard, BootTimer bootTimer)
    {
        Serial = serial;
        Keyboard = keyboard;
        BootTimer = bootTimer;
        Stateful = [(Descriptors[0], serial), (Descriptors[1], keyboard), (Descriptors[2], bootTimer)];
    }

    public Serial16550 Serial { get; }
    public I8042 Keyboard { get; }
    public BootTimer BootTimer { get; }
    public IReadOnlyList<(DeviceDescriptor Descriptor, IStatefulDevice Device)> Stateful { get; }

    internal static StandardDevices Attach(DeviceHost host, StandardDeviceHooks hooks)
    {
        var serial = new Serial16550(hooks.Console, host.InterruptLine(Serial16550.Com1Irq));
        host.RegisterPort(Serial16550.Com1Port, Serial16550.PortCount, serial, "COM1 (16550)");
        var keyboard = new I8042(hooks.GuestReset, host.InterruptLine(I8042.KeyboardIrq));
        host.RegisterPort(I8042.BasePort, I8042.PortCount, keyboard, "i8042");
        var bootTimer = new BootTimer(hooks.BootStart, hooks.BootDone);
        host.RegisterMmio(BootTimer.Address, BootTimer.Length, bootTimer, "boot timer");
        return new StandardDevices(serial, keyboard, bootTimer);
    }
}
