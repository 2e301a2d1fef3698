using FireSharp.Devices.Manager;
using FireSharp.Devices.RateLimiting;
using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio.Rng;

/// <summary>The entropy device of a VM spec (at most one, off unless asked for, as in Firecracker).</summary>
public sealed record RngSpec : IDeviceConfig
{
    public string Kind => RngDeviceKind.Name;

    /// <summary>The entropy device's rate limiter (bytes and requests, as Firecracker's); null = unlimited. Snapshots keep it (device state).</summary>
    public RateLimiterSpec? RateLimiter { get; init; }
}

/// <summary>
/// virtio-rng for the device manager: an <see cref="RngSpec"/> becomes a <see cref="VirtioRng"/>. It has no host
/// side, so its snapshot descriptor (id <see cref="DeviceId"/>) carries only the slot the manager adds.
/// </summary>
public sealed class RngDeviceKind : VirtioDeviceKind<RngSpec, VirtioRng>
{
    public const string Name = "virtio-rng";

    /// <summary>The entropy device's id in a VM (and in snapshots).</summary>
    public const string DeviceId = "rng";

    public static readonly RngDeviceKind Instance = new();

    private RngDeviceKind() { }

    public override string Kind => Name;
    public override string Noun => "entropy device";
    public override int MaxCount => 1;
    public override string Field(int index) => "rng";

    protected override void Validate(IReadOnlyList<RngSpec> configs)
    {
        foreach (var c in configs) c.RateLimiter?.Validate("rng.rate_limiter");
    }

    protected override string Id(IReadOnlyList<RngSpec> configs, int index) => DeviceId;

    protected override VirtioRng Open(IReadOnlyList<RngSpec> configs, int index, ILogger logger) => new(null, logger, rateLimiter: new RateLimiter(configs[index].RateLimiter));

    protected override IReadOnlyDictionary<string, string> Settings(RngSpec config, VirtioRng device) => new Dictionary<string, string>();

    protected override string Describe(VirtioRng device) => device.Id;

    protected override RngSpec Restore(DeviceDescriptor descriptor, string? hostOverride) =>
        hostOverride is null ? new RngSpec()
            : throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch, $"entropy device '{descriptor.Id}' has no host side to override");
}
