using FireSharp.Devices.RateLimiting;
using FireSharp.Proto.Worker;

namespace FireSharp.Daemon.Vms;

using Target = FireSharp.Devices.RateLimiting.RateLimiterTarget;
using WireRateLimiter = FireSharp.Proto.Worker.RateLimiter;
using WireTarget = FireSharp.Proto.Worker.RateLimiterTarget;
using WireTokenBucket = FireSharp.Proto.Worker.TokenBucket;

/// <summary>
/// Rate limiters between the daemon and a worker (worker.proto's RateLimiter, RateLimiterUpdate), and what an
/// applied update does to the VM's spec (the spec shows the limiters in force, as Firecracker's config does).
/// </summary>
internal static class RateLimiterUpdates
{
    public static WireRateLimiter? ToWire(RateLimiterSpec? spec) =>
        spec is null ? null : new WireRateLimiter { Bandwidth = ToWire(spec.Bandwidth), Ops = ToWire(spec.Ops) };

    private static WireTokenBucket? ToWire(TokenBucketSpec? b) =>
        b is null ? null : new WireTokenBucket { Size = b.Size, OneTimeBurst = b.OneTimeBurst, RefillTimeMs = b.RefillTimeMs };

    /// <summary>The worker request for <paramref name="command"/>'s changes.</summary>
    public static UpdateRateLimiters ToWire(UpdateRateLimitersCommand command)
    {
        var wire = new UpdateRateLimiters();
        foreach (var c in command.Changes)
        {
            wire.Updates.Add(new RateLimiterUpdate
            {
                Target = c.Target switch
                {
                    Target.Drive => WireTarget.Drive,
                    Target.NetworkRx => WireTarget.NetworkRx,
                    Target.NetworkTx => WireTarget.NetworkTx,
                    Target.Entropy => WireTarget.Entropy,
                    _ => throw VmApiException.Invalid(c.IdField, $"unknown rate limiter target {c.Target}"),
                },
                DeviceId = c.DeviceId,
                Limiter = ToWire(c.Limiter),
                Field = c.IdField,
                LimiterField = c.LimiterField,
            });
        }
        return wire;
    }

    /// <summary><paramref name="spec"/> with the changes applied to the drives, interfaces and entropy device it lists.</summary>
    public static VmConfig Apply(VmConfig spec, IReadOnlyList<VmRateLimiterChange> changes)
    {
        var drives = spec.Drives.Select(d =>
            changes.LastOrDefault(c => c.Target == Target.Drive && c.DeviceId == d.Id) is { } c ? d with { RateLimiter = c.Limiter } : d).ToList();
        var nics = spec.NetworkInterfaces.Select(n =>
        {
            foreach (var c in changes.Where(c => c.DeviceId == n.Id))
            {
                if (c.Target == Target.NetworkRx) n = n with { RxRateLimiter = c.Limiter };
                else if (c.Target == Target.NetworkTx) n = n with { TxRateLimiter = c.Limiter };
            }
            return n;
        }).ToList();
        var rng = changes.LastOrDefault(c => c.Target == Target.Entropy) is { } r ? r.Limiter : spec.RngRateLimiter;
        return spec with { Drives = drives, NetworkInterfaces = nics, RngRateLimiter = rng };
    }
}
