using FireSharp.Devices.Legacy;
using FireSharp.Devices.RateLimiting;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Devices.Manager;

/// <summary>
/// The one owner of a VM's devices, Firecracker's device manager in FireSharp's terms. It
/// <list type="bullet">
/// <item>plans the devices of a spec (<see cref="DevicePlanner"/>: kinds, limits, ids, virtio-mmio slots, GSIs) and
/// opens their host sides before any VM exists (<see cref="Open"/>: bad input fails here, with nothing left open);</item>
/// <item>builds the standard devices and places every virtio device (<see cref="Attach"/>: transport, irqfd and
/// ioeventfd with their one fallback, MMIO window, the thread each device runs on);</item>
/// <item>lists what snapshots carry (<see cref="Stateful"/>: every device, with its kind's descriptor) and the
/// kernel parameters the devices need (<see cref="KernelParameters"/>);</item>
/// <item>orders the lifecycle: <see cref="Quiesce"/> after the vCPUs paused, <see cref="Unquiesce"/> before they
/// resume, <see cref="CompleteRestore"/> once a restored VM's interrupt controller is in place, and
/// <see cref="Dispose"/> after the vCPUs stopped and before guest memory goes.</item>
/// </list>
/// The device kinds themselves are known only to their <see cref="IVirtioDeviceKind"/>s (<see cref="DeviceKinds"/>).
/// </summary>
public sealed class DeviceManager : IDisposable
{
    /// <summary>The descriptor setting that records a virtio device's slot (the guest's driver knows it at that address).</summary>
    public const string SlotKey = "slot";

    private readonly IReadOnlyList<PlannedDevice> _plan;
    private readonly IVirtioDevice[] _devices;
    private readonly List<VirtioPlacement> _virtio = [];
    private StandardDevices? _standard;
    private int _attached, _disposed;

    private DeviceManager(IReadOnlyList<PlannedDevice> plan, IVirtioDevice[] devices)
    {
        _plan = plan;
        _devices = devices;
    }

    /// <summary>
    /// Plans <paramref name="configs"/> (<see cref="DevicePlanner.Plan"/>) and opens every device's host side (images,
    /// taps, sockets). Throws a <see cref="DeviceConfigException"/> naming the device for anything wrong, with nothing
    /// left open. Nothing is wired until <see cref="Attach"/>.
    /// </summary>
    public static DeviceManager Open(IReadOnlyList<IDeviceConfig> configs, ILogger? logger = null)
    {
        logger ??= NullLogger.Instance;
        var plan = DevicePlanner.Plan(configs);
        var devices = new IVirtioDevice[plan.Count];
        int opened = 0;
        try
        {
            for (; opened < plan.Count; opened++)
                devices[opened] = plan[opened].Kind.Open(plan[opened].KindConfigs, plan[opened].Index, logger);
        }
        catch
        {
            for (int i = 0; i < opened; i++) (devices[i] as IDisposable)?.Dispose();
            throw;
        }
        return new DeviceManager(plan, devices);
    }

    /// <summary>The virtio devices as planned, in slot order (known before <see cref="Attach"/>).</summary>
    public IReadOnlyList<PlannedDevice> Plan => _plan;

    /// <summary>
    /// Builds the standard devices (COM1, i8042, boot timer) and places every virtio device into the VM
    /// (<see cref="VirtioPlacement"/>), each with a new irqfd and ioeventfds (also for a restored VM) and its
    /// thread started. With <paramref name="quiesced"/> the virtio devices start quiesced: a restore sets their
    /// state first, then <see cref="CompleteRestore"/>. Once only.
    /// </summary>
    public void Attach(DeviceHost host, StandardDeviceHooks hooks, bool quiesced = false)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(hooks);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (Interlocked.Exchange(ref _attached, 1) != 0) throw new InvalidOperationException("the devices are already attached");
        _standard = StandardDevices.Attach(host, hooks);
        for (int i = 0; i < _plan.Count; i++) _virtio.Add(VirtioPlacement.Place(_plan[i], _devices[i], host, quiesced));
    }

    private StandardDevices Standard => _standard ?? throw new InvalidOperationException("the devices are not attached yet");

    public Serial16550 Serial => Standard.Serial;
    public I8042 Keyboard => Standard.Keyboard;
    public BootTimer BootTimer => Standard.BootTimer;

    /// <summary>The placed virtio devices, in slot order.</summary>
    public IReadOnlyList<VirtioPlacement> Virtio => _virtio;

    /// <summary>Every device whose state goes into snapshots, with its descriptor: the standard devices, then the virtio devices (their transports, which carry the devices' own state).</summary>
    public IReadOnlyList<(DeviceDescriptor Descriptor, IStatefulDevice Device)> Stateful =>
        [.. Standard.Stateful, .. _virtio.Select(v => (v.Descriptor, (IStatefulDevice)v.Transport))];

    /// <summary>The virtio devices of type <typeparamref name="T"/>, in slot order (opened ones, also before <see cref="Attach"/>).</summary>
    public IEnumerable<T> OfType<T>() where T : IVirtioDevice => _devices.OfType<T>();

    /// <summary>Where <paramref name="device"/> was placed; throws if it is not one of this VM's.</summary>
    public VirtioPlacement PlacementOf(IVirtioDevice device) =>
        _virtio.FirstOrDefault(v => ReferenceEquals(v.Device, device)) ?? throw new ArgumentException($"{device.Id} is not placed in this VM", nameof(device));

    /// <summary>
    /// The rate limiter of one device path: a drive or an interface by its id (RX or TX), or the entropy device
    /// (id ignored). <see cref="RateLimiterConfigException"/> (UnknownDevice) when the VM has no such device.
    /// </summary>
    public RateLimiter RateLimiter(RateLimiterTarget target, string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        var limiter = target switch
        {
            RateLimiterTarget.Drive => Planned<VirtioBlock>(id)?.RateLimiter,
            RateLimiterTarget.NetworkRx => Planned<VirtioNet>(id)?.RxLimiter,
            RateLimiterTarget.NetworkTx => Planned<VirtioNet>(id)?.TxLimiter,
            RateLimiterTarget.Entropy => OfType<VirtioRng>().FirstOrDefault()?.RateLimiter,
            _ => null,
        };
        return limiter ?? throw new RateLimiterConfigException(target == RateLimiterTarget.Entropy ? "rng" : "id", RateLimiterConfigError.UnknownDevice,
            target == RateLimiterTarget.Entropy ? "the VM has no entropy device" : $"the VM has no {(target == RateLimiterTarget.Drive ? "drive" : "network interface")} '{id}'");
    }

    private T? Planned<T>(string id) where T : class, IVirtioDevice =>
        _virtio.FirstOrDefault(v => v.Device is T && string.Equals(v.Planned.Id, id, StringComparison.Ordinal))?.Device as T;

    /// <summary>What a Linux command line needs for these devices (see <see cref="DevicePlanner.KernelParameters"/>); empty without virtio devices.</summary>
    public string KernelParameters() => DevicePlanner.KernelParameters(_plan);

    /// <summary>Whether every virtio device is quiesced (true without any).</summary>
    public bool IsQuiesced => _virtio.All(v => v.Transport.IsQuiesced);

    /// <summary>
    /// Stops every virtio device's request processing and returns once none has a request in flight or owes an
    /// interrupt (<see cref="VirtioMmioTransport.Quiesce"/>): for a pause or a snapshot, after the vCPUs paused. Idempotent.
    /// </summary>
    public void Quiesce()
    {
        foreach (var v in _virtio) v.Transport.Quiesce();
    }

    /// <summary>Undoes <see cref="Quiesce"/> (before the vCPUs resume): each device takes what its queues hold.</summary>
    public void Unquiesce()
    {
        if (Volatile.Read(ref _disposed) != 0) return;
        foreach (var v in _virtio) v.Transport.Unquiesce();
    }

    /// <summary>
    /// After a restore set the devices' state and the VM's interrupt controller: re-raises interrupts the drivers had
    /// not acknowledged (an interrupt raised before the irqchip state was set would have been lost), then, with
    /// <paramref name="resume"/>, lets the devices run (a VM left paused keeps them quiesced until <see cref="Unquiesce"/>).
    /// </summary>
    public void CompleteRestore(bool resume)
    {
        foreach (var v in _virtio) v.Transport.RaisePendingInterrupt();
        if (resume) Unquiesce();
    }

    /// <summary>
    /// Stops every device's thread and releases its host side and eventfds. Call after the vCPUs have stopped and
    /// before guest memory is unmapped: device threads write guest memory.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var v in _virtio) v.Dispose();
        // Opened but never placed (Attach failed or never ran).
        for (int i = _virtio.Count; i < _devices.Length; i++) (_devices[i] as IDisposable)?.Dispose();
    }
}
