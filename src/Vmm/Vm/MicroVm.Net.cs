using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Snapshot;
using Microsoft.Extensions.Logging;

namespace FireSharp.Vm;

public sealed partial record VmSpec
{
    /// <summary>
    /// virtio-net interfaces, each on a tap. They take the virtio-mmio slots after the drives and the vsock
    /// device, in list order (eth0, eth1, ... in a Linux guest). One of them may carry IPv4 settings, which
    /// become the kernel's <c>ip=</c> parameter.
    /// </summary>
    public IReadOnlyList<NetworkInterfaceSpec> NetworkInterfaces { get; init; } = [];
}

/// <summary>The network interfaces of a microVM.</summary>
public sealed partial class MicroVm
{
    /// <summary>The virtio-net devices, in slot order (empty without <see cref="VmSpec.NetworkInterfaces"/>).</summary>
    public IReadOnlyList<VirtioNet> Nics { get; private init; } = [];

    /// <summary>The slot of interface <paramref name="index"/>: after the drives and the vsock device.</summary>
    public static int NicSlot(VmSpec spec, int index) => spec.Drives.Count + (spec.Vsock is null ? 0 : 1) + index;

    /// <summary>Planned descriptors of the interfaces (ids and kinds; the taps are known once opened).</summary>
    private static IEnumerable<DeviceDescriptor> PlannedNics(VmSpec spec) =>
        spec.NetworkInterfaces.Select((n, i) => NetSettings.Describe(n, NicSlot(spec, i), tapInUse: null, mac: null));

    /// <summary>Validates the interfaces and opens (or creates) every tap; nothing stays open on failure.</summary>
    private static List<(NetworkInterfaceSpec Spec, TapBackend Tap, byte[] Mac)> OpenNics(VmSpec spec)
    {
        NetworkInterfaceSpec.Validate(spec.NetworkInterfaces);
        VirtioMmioLayout.CheckCount(spec.Drives.Count + (spec.Vsock is null ? 0 : 1) + spec.NetworkInterfaces.Count);
        var opened = new List<(NetworkInterfaceSpec, TapBackend, byte[])>();
        try
        {
            for (int i = 0; i < spec.NetworkInterfaces.Count; i++)
            {
                var n = spec.NetworkInterfaces[i];
                string field = NetworkInterfaceSpec.FieldName(i);
                var tap = TapBackend.Open(n.TapName, field);
                opened.Add((n, tap, Array.Empty<byte>()));
                opened[^1] = (n, tap, n.EffectiveMac(tap.Name, field));
            }
        }
        catch
        {
            foreach (var (_, tap, _) in opened) tap.Dispose();
            throw;
        }
        return opened;
    }

    /// <summary>Creates the devices at their slots and starts their loops (quiesced for a restore). Owns the taps from here on.</summary>
    private static List<VirtioNet> AttachNics(VirtualMachine machine, VmSpec spec, List<(NetworkInterfaceSpec Spec, TapBackend Tap, byte[] Mac)> opened, bool quiesced)
    {
        var nics = new List<VirtioNet>();
        int i = 0;
        try
        {
            for (; i < opened.Count; i++)
            {
                var (n, tap, mac) = opened[i];
                var nic = new VirtioNet(n.Id, tap, mac, spec.Logger);
                nics.Add(nic);
                nic.AttachToVm(VirtioHostFor(machine, spec.Logger), NicSlot(spec, i), quiesced);
            }
        }
        catch
        {
            foreach (var nic in nics) nic.Dispose();
            for (int j = nics.Count; j < opened.Count; j++) opened[j].Tap.Dispose();
            throw;
        }
        return nics;
    }

    /// <summary>The interfaces' kernel parameters: a virtio_mmio.device= each, and ip= for the one with IPv4 settings.</summary>
    private static string NicCmdline(VmSpec spec, IReadOnlyList<VirtioNet> nics)
    {
        var parts = new List<string>();
        foreach (var nic in nics) parts.Add(VirtioMmioLayout.CmdlineParameter(nic.Slot));
        for (int i = 0; i < spec.NetworkInterfaces.Count; i++)
            if (spec.NetworkInterfaces[i].Ipv4 is { } ip) parts.Add(ip.KernelParameter($"eth{i}"));
        return parts.Count == 0 ? "" : " " + string.Join(' ', parts);
    }

    /// <summary>The interfaces' snapshot entries: the state is the transport's (which carries the device's).</summary>
    private static IEnumerable<(DeviceDescriptor, IStatefulDevice)> NicStateful(VmSpec spec, IReadOnlyList<VirtioNet> nics) =>
        nics.Select((nic, i) => (NetSettings.Describe(spec.NetworkInterfaces[i], nic.Slot, nic.Backend.Name, NetworkInterfaceSpec.FormatMac(nic.Mac)),
            (IStatefulDevice)nic.Transport!));

    /// <summary>Quiesces every interface's transport (snapshots, pause).</summary>
    public void QuiesceNics()
    {
        foreach (var nic in Nics) nic.Transport?.Quiesce();
    }

    /// <summary>Lets every interface run again; after a restore, re-raises interrupts the driver had not acknowledged first.</summary>
    public void UnquiesceNics(bool raisePending = false)
    {
        foreach (var nic in Nics)
        {
            if (raisePending) nic.Transport?.RaisePendingInterrupt();
            nic.Transport?.Unquiesce();
        }
    }

    /// <summary>Whether every interface is quiesced (true without interfaces).</summary>
    public bool NicsQuiesced => Nics.All(n => n.Transport?.IsQuiesced ?? true);

    private void DisposeNics()
    {
        if (Nics.Count == 0) return;
        // Their loops write guest memory: after the vCPUs, before the memory goes.
        try
        {
            if (Machine.State is VmState.Running or VmState.Paused) Machine.Stop();
        }
        catch (TimeoutException) { }
        foreach (var nic in Nics) nic.Dispose();
    }
}
