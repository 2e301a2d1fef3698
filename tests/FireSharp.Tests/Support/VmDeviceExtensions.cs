using FireSharp.Devices.Virtio;
using FireSharp.Vm;

namespace FireSharp.Tests.Support;

/// <summary>Test shortcuts into a VM's device manager.</summary>
internal static class VmDeviceExtensions
{
    /// <summary>The drives as configured (the restored ones with their overrides), in slot order.</summary>
    public static IReadOnlyList<DriveSpec> Drives(this MicroVm vm) => [.. vm.Devices.Virtio.Select(v => v.Config).OfType<DriveSpec>()];

    /// <summary>The virtio-blk devices, in slot order.</summary>
    public static IReadOnlyList<VirtioBlock> Blocks(this MicroVm vm) => [.. vm.Devices.OfType<VirtioBlock>()];

    /// <summary>Every virtio device's transport state, in slot order.</summary>
    public static IReadOnlyList<byte[]> TransportStates(this MicroVm vm) => [.. vm.Devices.Virtio.Select(v => v.Transport.SaveState())];
}
