using System.Globalization;
using FireSharp.Devices.Manager;
using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// virtio-net for the device manager: a <see cref="NetworkInterfaceSpec"/> becomes a <see cref="VirtioNet"/> on a
/// <see cref="TapBackend"/> (eth0, eth1, ... in a Linux guest, in list order; the one with IPv4 settings adds the
/// kernel's <c>ip=</c>). A snapshot records each interface under its id with the guest MAC (the restored guest
/// keeps it), the tap it used and whether that tap was automatic (<see cref="Keys"/>); a restore opens the clone's
/// tap (the override), or the recorded one, or a new automatic one for an automatic tap.
/// </summary>
public sealed class NetDeviceKind : VirtioDeviceKind<NetworkInterfaceSpec, VirtioNet>
{
    public const string Name = "virtio-net";

    public static readonly NetDeviceKind Instance = new();

    private NetDeviceKind() { }

    /// <summary>The settings of an interface's snapshot descriptor.</summary>
    public static class Keys
    {
        public const string Tap = "tap", Auto = "auto", Mac = "mac";
    }

    public override string Kind => Name;
    public override string Noun => "network interface";
    public override string Field(int index) => NetworkInterfaceSpec.FieldName(index);

    protected override void Validate(IReadOnlyList<NetworkInterfaceSpec> configs) => NetworkInterfaceSpec.Validate(configs);

    protected override string Id(IReadOnlyList<NetworkInterfaceSpec> configs, int index) => configs[index].Id;

    protected override VirtioNet Open(IReadOnlyList<NetworkInterfaceSpec> configs, int index, ILogger logger)
    {
        var nic = configs[index];
        string field = Field(index);
        var tap = TapBackend.Open(nic.TapName, field);
        try
        {
            return new VirtioNet(nic.Id, tap, nic.EffectiveMac(tap.Name, field), logger,
                rxLimiter: new RateLimiting.RateLimiter(nic.RxRateLimiter), txLimiter: new RateLimiting.RateLimiter(nic.TxRateLimiter));
        }
        catch
        {
            tap.Dispose();
            throw;
        }
    }

    protected override IReadOnlyDictionary<string, string> Settings(NetworkInterfaceSpec config, VirtioNet device) =>
        new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Keys.Tap] = device.Backend.Name,
            [Keys.Auto] = config.TapName is null ? "true" : "false",
            [Keys.Mac] = NetworkInterfaceSpec.FormatMac(device.Mac),
        };

    /// <summary>The kernel's <c>ip=</c> for the interface with IPv4 settings (ethN, N its index: probe order is slot order).</summary>
    protected override IEnumerable<string> KernelParameters(IReadOnlyList<NetworkInterfaceSpec> configs)
    {
        for (int i = 0; i < configs.Count; i++)
            if (configs[i].Ipv4 is { } ip) yield return ip.KernelParameter("eth" + i.ToString(CultureInfo.InvariantCulture));
    }

    protected override string Describe(VirtioNet device) =>
        $"{device.Id} ({device.Backend.Name}, {NetworkInterfaceSpec.FormatMac(device.Mac)}, offloads {device.Backend.SupportedOffloads})";

    protected override NetworkInterfaceSpec Restore(DeviceDescriptor descriptor, string? hostOverride)
    {
        var saved = Parse(descriptor);
        if (hostOverride is null) return saved;
        try
        {
            TapBackend.ValidateName(hostOverride, $"tap of network interface '{descriptor.Id}'");
        }
        catch (NetConfigException e)
        {
            throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch, e.Message, e);
        }
        return saved with { TapName = hostOverride };
    }

    /// <summary>The interface a descriptor records (MAC fixed, tap as recorded); <see cref="DeviceRestoreException"/> (Corrupt) for bad settings.</summary>
    public NetworkInterfaceSpec Parse(DeviceDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        bool auto = Flag(descriptor, Keys.Auto);
        string mac = Setting(descriptor, Keys.Mac), tap = Setting(descriptor, Keys.Tap);
        try
        {
            NetworkInterfaceSpec.ParseMac(mac);
            if (!auto) TapBackend.ValidateName(tap);
        }
        catch (NetConfigException e)
        {
            throw Corrupt(descriptor, e.Message);
        }
        return new NetworkInterfaceSpec { Id = descriptor.Id, TapName = auto ? null : tap, Mac = mac };
    }
}
