using FireSharp.Devices.Virtio;
using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Manager;

/// <summary>
/// Everything the <see cref="DeviceManager"/> knows about one kind of virtio device, and the only place that knows
/// it: the factory (check a spec's configs of this kind, open one: its host side and the device) and the persist
/// implementation (the settings its snapshot descriptor records, and the config a descriptor describes). Configs
/// (<see cref="IDeviceConfig.Kind"/>) and snapshot descriptors (<see cref="DeviceDescriptor.Kind"/>) are matched to
/// their kind by <see cref="Kind"/>; <see cref="DeviceKinds"/> lists the kinds.
/// </summary>
/// <remarks>
/// The manager owns what is common to every virtio device: its slot, address and GSI, the transport, the
/// interrupt and notification wiring, the thread it runs on, its state (the transport's, which carries the
/// device's own), quiesce, resume and disposal.
/// </remarks>
public interface IVirtioDeviceKind
{
    /// <summary>The kind recorded in snapshots and carried by configs, e.g. "virtio-blk".</summary>
    string Kind { get; }

    /// <summary>What one device is called in messages ("drive", "network interface").</summary>
    string Noun { get; }

    /// <summary>How many devices of this kind a VM may have.</summary>
    int MaxCount { get; }

    /// <summary>The field that names config <paramref name="index"/> of this kind in errors ("drive[1]").</summary>
    string Field(int index);

    /// <summary>Checks a spec's configs of this kind together, before anything is opened; throws a <see cref="DeviceConfigException"/>.</summary>
    void Validate(IReadOnlyList<IDeviceConfig> configs);

    /// <summary>The id config <paramref name="index"/> has in the VM (snapshots store its state under it).</summary>
    string Id(IReadOnlyList<IDeviceConfig> configs, int index);

    /// <summary>
    /// Opens config <paramref name="index"/>'s host side and builds the device, which owns what was opened (Dispose
    /// releases it). Throws a <see cref="DeviceConfigException"/>, with nothing left open.
    /// </summary>
    IVirtioDevice Open(IReadOnlyList<IDeviceConfig> configs, int index, ILogger logger);

    /// <summary>The settings a snapshot records for the device (what a restore needs to rebuild it; the manager adds the slot).</summary>
    IReadOnlyDictionary<string, string> Settings(IDeviceConfig config, IVirtioDevice device);

    /// <summary>Linux kernel parameters this kind needs besides each device's <c>virtio_mmio.device=</c> (root=, ip=).</summary>
    IEnumerable<string> KernelParameters(IReadOnlyList<IDeviceConfig> configs);

    /// <summary>The device in logs and on the MMIO bus, e.g. "virtio-net (fstap0, 02:fc:...)".</summary>
    string Describe(IVirtioDevice device);

    /// <summary>
    /// For a restore: the config <paramref name="descriptor"/> records, with this clone's host side
    /// <paramref name="hostOverride"/> (its disk copy, tap, socket path) if one was given, checked against the host.
    /// Throws <see cref="DeviceRestoreException"/>.
    /// </summary>
    IDeviceConfig Restore(DeviceDescriptor descriptor, string? hostOverride);
}

/// <summary>The typed side of an <see cref="IVirtioDeviceKind"/>: a config type and a device type.</summary>
public abstract class VirtioDeviceKind<TConfig, TDevice> : IVirtioDeviceKind
    where TConfig : class, IDeviceConfig
    where TDevice : class, IVirtioDevice
{
    public abstract string Kind { get; }
    public abstract string Noun { get; }
    public virtual int MaxCount => VirtioMmioLayout.MaxDevices;
    public abstract string Field(int index);

    protected abstract void Validate(IReadOnlyList<TConfig> configs);
    protected abstract string Id(IReadOnlyList<TConfig> configs, int index);
    protected abstract TDevice Open(IReadOnlyList<TConfig> configs, int index, ILogger logger);
    protected abstract IReadOnlyDictionary<string, string> Settings(TConfig config, TDevice device);
    protected virtual IEnumerable<string> KernelParameters(IReadOnlyList<TConfig> configs) => [];
    protected abstract string Describe(TDevice device);
    protected abstract TConfig Restore(DeviceDescriptor descriptor, string? hostOverride);

    void IVirtioDeviceKind.Validate(IReadOnlyList<IDeviceConfig> configs) => Validate(Typed(configs));
    string IVirtioDeviceKind.Id(IReadOnlyList<IDeviceConfig> configs, int index) => Id(Typed(configs), index);
    IVirtioDevice IVirtioDeviceKind.Open(IReadOnlyList<IDeviceConfig> configs, int index, ILogger logger) => Open(Typed(configs), index, logger);
    IReadOnlyDictionary<string, string> IVirtioDeviceKind.Settings(IDeviceConfig config, IVirtioDevice device) => Settings(Typed(config), Typed(device));
    IEnumerable<string> IVirtioDeviceKind.KernelParameters(IReadOnlyList<IDeviceConfig> configs) => KernelParameters(Typed(configs));
    string IVirtioDeviceKind.Describe(IVirtioDevice device) => Describe(Typed(device));
    IDeviceConfig IVirtioDeviceKind.Restore(DeviceDescriptor descriptor, string? hostOverride) => Restore(descriptor, hostOverride);

    /// <summary>A setting of <paramref name="descriptor"/>, or <see cref="DeviceRestoreException"/> (Corrupt) when it is missing.</summary>
    protected string Setting(DeviceDescriptor descriptor, string key) =>
        descriptor.Settings.TryGetValue(key, out var v) ? v : throw Corrupt(descriptor, $"has no '{key}' setting");

    /// <summary>A true/false setting, or Corrupt.</summary>
    protected bool Flag(DeviceDescriptor descriptor, string key) => Setting(descriptor, key) switch
    {
        "true" => true,
        "false" => false,
        var v => throw Corrupt(descriptor, $"'{key}' is '{v}', not true/false"),
    };

    protected DeviceRestoreException Corrupt(DeviceDescriptor descriptor, string what) =>
        new(DeviceRestoreProblem.Corrupt, $"{Noun} '{descriptor.Id}' {what}");

    private TConfig Typed(IDeviceConfig config) =>
        config as TConfig ?? throw new ArgumentException($"a {config.GetType().Name} is not a {Kind} config", nameof(config));

    private TDevice Typed(IVirtioDevice device) =>
        device as TDevice ?? throw new ArgumentException($"a {device.GetType().Name} is not a {Kind} device", nameof(device));

    private List<TConfig> Typed(IReadOnlyList<IDeviceConfig> configs) => [.. configs.Select(Typed)];
}
