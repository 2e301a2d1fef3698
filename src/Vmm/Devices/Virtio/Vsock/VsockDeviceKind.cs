using System.Globalization;
using FireSharp.Devices.Manager;
using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// virtio-vsock for the device manager: at most one per VM, a <see cref="VsockDeviceSpec"/> becomes a
/// <see cref="VirtioVsock"/> with its hybrid host socket. A snapshot records it under id <see cref="Id"/> with the
/// guest CID and the socket path the snapshotted VM used (<see cref="Keys"/>); a restore creates the clone's own
/// socket (the override) or, if it is free, the recorded one. Connections do not survive: the guest gets a
/// transport reset event.
/// </summary>
public sealed class VsockDeviceKind : VirtioDeviceKind<VsockDeviceSpec, VirtioVsock>
{
    public const string Name = "virtio-vsock";

    /// <summary>The vsock device's id in a VM (and in snapshots).</summary>
    public const string DeviceId = "vsock";

    public static readonly VsockDeviceKind Instance = new();

    private VsockDeviceKind() { }

    /// <summary>The settings of the vsock device's snapshot descriptor.</summary>
    public static class Keys
    {
        public const string Cid = "cid", Path = "path";
    }

    public override string Kind => Name;
    public override string Noun => "vsock device";
    public override int MaxCount => 1;
    public override string Field(int index) => "vsock";

    protected override void Validate(IReadOnlyList<VsockDeviceSpec> configs)
    {
        foreach (var c in configs) c.Validate();
    }

    protected override string Id(IReadOnlyList<VsockDeviceSpec> configs, int index) => DeviceId;

    protected override VirtioVsock Open(IReadOnlyList<VsockDeviceSpec> configs, int index, ILogger logger) => new(configs[index], logger);

    protected override IReadOnlyDictionary<string, string> Settings(VsockDeviceSpec config, VirtioVsock device) =>
        new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Keys.Cid] = device.GuestCid.ToString(CultureInfo.InvariantCulture),
            [Keys.Path] = device.UdsPath,
        };

    protected override string Describe(VirtioVsock device) => $"{device.Id} (guest CID {device.GuestCid}, {device.UdsPath})";

    /// <summary>
    /// The recorded device with this clone's socket path: the override's, else the recorded one, which must then be
    /// free: a restore never takes over a socket path that exists (the snapshotted VM, or another clone, may still
    /// be listening there), so clones need an override each.
    /// </summary>
    protected override VsockDeviceSpec Restore(DeviceDescriptor descriptor, string? hostOverride)
    {
        var saved = Parse(descriptor);
        var spec = hostOverride is { } path ? saved with { UdsPath = path } : saved;
        try
        {
            spec.Validate();
        }
        catch (VirtioConfigException e) when (hostOverride is null && e.Reason == VirtioConfigError.InvalidVsockPath)
        {
            throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch,
                $"the vsock socket path it was taken with cannot be used ({e.Message}); give this clone its own path (RestoreOverrides.VsockUdsPath, --vsock-path)", e);
        }
        catch (VirtioConfigException e)
        {
            throw new DeviceRestoreException(hostOverride is null ? DeviceRestoreProblem.Corrupt : DeviceRestoreProblem.Mismatch, $"vsock device: {e.Message}", e);
        }
        return spec;
    }

    /// <summary>The vsock device a descriptor records; <see cref="DeviceRestoreException"/> (Corrupt) for missing or bad settings.</summary>
    public VsockDeviceSpec Parse(DeviceDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        if (!ulong.TryParse(Setting(descriptor, Keys.Cid), NumberStyles.None, CultureInfo.InvariantCulture, out ulong cid))
            throw Corrupt(descriptor, $"has a bad guest CID '{Setting(descriptor, Keys.Cid)}'");
        string path = Setting(descriptor, Keys.Path);
        if (path.Length == 0) throw Corrupt(descriptor, "has an empty socket path");
        return new VsockDeviceSpec(cid, path);
    }
}
