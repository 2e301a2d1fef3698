using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Vm;

/// <summary>Everything needed to build a runnable microVM.</summary>
/// <remarks>
/// The devices are one list, <see cref="Devices"/>, which the device manager places (virtio-mmio slots by kind,
/// in <see cref="Devices.Manager.DeviceKinds"/> order: drives, vsock, network interfaces, entropy device).
/// <see cref="Drives"/>, <see cref="Vsock"/>, <see cref="NetworkInterfaces"/> and <see cref="Rng"/> are typed views of
/// it: setting one replaces the devices of that kind and keeps the others.
/// </remarks>
public sealed record VmSpec
{
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }

    /// <summary>Kernel command line; null = <see cref="MicroVm.DefaultLinuxCmdline"/> for Linux, empty otherwise.</summary>
    public string? Cmdline { get; init; }

    public ulong MemoryMib { get; init; } = 128;
    public int Vcpus { get; init; } = 1;
    public ISerialSink Serial { get; init; } = NullSerialSink.Instance;

    /// <summary>Apply PVM workarounds; null = detect.</summary>
    public bool? Pvm { get; init; }

    /// <summary>For an ELF with both entries, enter through PVH rather than the 64-bit boot protocol.</summary>
    public bool PreferPvh { get; init; }

    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>Every device the spec asks for besides the standard ones (COM1, i8042, boot timer), of any kind.</summary>
    public IReadOnlyList<IDeviceConfig> Devices { get; init; } = [];

    /// <summary>
    /// virtio-blk drives, in slot order (the first at 0xC0001000, GSI 5): /dev/vda, /dev/vdb, ... for Linux. The one
    /// with <see cref="DriveSpec.IsRoot"/> adds <c>root=/dev/vdX rw</c> (or <c>ro</c>).
    /// </summary>
    public IReadOnlyList<DriveSpec> Drives
    {
        get => [.. Devices.OfType<DriveSpec>()];
        init => Devices = With(value);
    }

    /// <summary>A virtio-vsock device (guest CID and the hybrid host Unix socket FireSharp creates); null = none.</summary>
    public VsockDeviceSpec? Vsock
    {
        get => Devices.OfType<VsockDeviceSpec>().FirstOrDefault();
        init => Devices = With<VsockDeviceSpec>(value is null ? [] : [value]);
    }

    /// <summary>
    /// virtio-net interfaces, each on a tap, in list order (eth0, eth1, ... in a Linux guest). One of them may carry
    /// IPv4 settings, which become the kernel's <c>ip=</c> parameter.
    /// </summary>
    public IReadOnlyList<NetworkInterfaceSpec> NetworkInterfaces
    {
        get => [.. Devices.OfType<NetworkInterfaceSpec>()];
        init => Devices = With(value);
    }

    /// <summary>A virtio-rng entropy device; null = none (as in Firecracker, it is there only when asked for).</summary>
    public RngSpec? Rng
    {
        get => Devices.OfType<RngSpec>().FirstOrDefault();
        init => Devices = With<RngSpec>(value is null ? [] : [value]);
    }

    private IReadOnlyList<IDeviceConfig> With<T>(IEnumerable<T> devices) where T : IDeviceConfig =>
        [.. Devices.Where(d => d is not T), .. devices.Cast<IDeviceConfig>()];
}
