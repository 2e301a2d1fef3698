using System.CommandLine;
using FireSharp.Devices.RateLimiting;
using FireSharp.Proto.V1;
using ApiRateLimiter = FireSharp.Proto.V1.RateLimiter;
using ApiTokenBucket = FireSharp.Proto.V1.TokenBucket;

namespace FireSharp.Cli;

/// <summary>
/// Rate limits on the command line of <c>firesharp vm</c>: the <c>bps=N</c> and <c>iops=N</c> keys of
/// <c>vm create --drive</c>, <c>bps</c>, <c>iops</c>, <c>rx-bps</c>, <c>rx-iops</c>, <c>tx-bps</c>, <c>tx-iops</c> of
/// <c>--net</c> (as <c>firesharp run</c>'s: N with K/M/G suffixes, 1K = 1024; a direction's own key wins over the
/// both-directions one), and <c>vm update</c>, which replaces limiters on a running VM.
/// </summary>
internal static class RateLimitOptions
{
    public static readonly string[] DriveKeys = ["bps", "iops"];
    public static readonly string[] NetKeys = ["bps", "iops", "rx-bps", "rx-iops", "tx-bps", "tx-iops"];

    /// <summary>The drive limiter of <c>bps</c>/<c>iops</c> in <paramref name="kv"/>, or null for none.</summary>
    public static ApiRateLimiter? Drive(IReadOnlyDictionary<string, string> kv, string what) =>
        ToProto(RateLimiterSpec.PerSecond(Amount(kv, "bps", what), Amount(kv, "iops", what)));

    /// <summary>The receive and transmit limiters of an interface's keys.</summary>
    public static (ApiRateLimiter? Rx, ApiRateLimiter? Tx) Net(IReadOnlyDictionary<string, string> kv, string what) => (
        ToProto(RateLimiterSpec.PerSecond(Amount(kv, "rx-bps", what) ?? Amount(kv, "bps", what), Amount(kv, "rx-iops", what) ?? Amount(kv, "iops", what))),
        ToProto(RateLimiterSpec.PerSecond(Amount(kv, "tx-bps", what) ?? Amount(kv, "bps", what), Amount(kv, "tx-iops", what) ?? Amount(kv, "iops", what))));

    /// <summary>A drive's (or the entropy device's) limiter of bytes and operations per second; null for none.</summary>
    public static ApiRateLimiter? Drive(long? bps, long? iops) => ToProto(RateLimiterSpec.PerSecond(bps, iops));

    /// <summary>The receive and transmit limiters of a <c>--net</c> value.</summary>
    public static (ApiRateLimiter? Rx, ApiRateLimiter? Tx) Net(Args.NetArg n) => (
        ToProto(RateLimiterSpec.PerSecond(n.Rate("rx-bps", "bps"), n.Rate("rx-iops", "iops"))),
        ToProto(RateLimiterSpec.PerSecond(n.Rate("tx-bps", "bps"), n.Rate("tx-iops", "iops"))));

    private static long? Amount(IReadOnlyDictionary<string, string> kv, string key, string what) =>
        kv.TryGetValue(key, out var text) ? Args.Size.Parse(text, 1, $"{what} {key}") : null;

    private static ApiRateLimiter? ToProto(RateLimiterSpec? spec) => spec is null ? null : new ApiRateLimiter
    {
        Bandwidth = spec.Bandwidth is { } b ? new ApiTokenBucket { Size = b.Size, OneTimeBurst = b.OneTimeBurst, RefillTimeMs = b.RefillTimeMs } : null,
        Ops = spec.Ops is { } o ? new ApiTokenBucket { Size = o.Size, OneTimeBurst = o.OneTimeBurst, RefillTimeMs = o.RefillTimeMs } : null,
    };

    /// <summary><c>firesharp vm update ID --drive-id D [--bps N] [--iops N]</c>, <c>--net-id I [rates...]</c> or <c>--rng [--bps N] [--iops N]</c>; <c>--unlimited</c> removes the limit.</summary>
    public static Command UpdateCommand()
    {
        var id = new Argument<string>("id");
        var drive = new Option<string?>("--drive-id") { Description = "the drive whose limiter is replaced" };
        var net = new Option<string?>("--net-id") { Description = "the interface whose limiters are replaced (both directions, or those the rx-/tx- options name)" };
        var rng = new Option<bool>("--rng") { Description = "replace the entropy device's limiter (--bps, --iops)" };
        var unlimited = new Option<bool>("--unlimited") { Description = "remove the limit" };
        var rates = NetKeys.Select(k => new Option<string?>("--" + k) { Description = $"{k}=N as in --drive/--net (a size: 64M, 1G, ...; 1K = 1024)" }).ToArray();
        var command = new Command("update", "replace rate limiters of a running VM's drive, interface or entropy device (fresh, full buckets; the rest keeps its limit)")
        {
            id, drive, net, rng, unlimited,
        };
        foreach (var r in rates) command.Options.Add(r);
        command.SetAction((parse, ct) => VmClientCommands.CallAsync(parse, async (client, options) =>
        {
            var kv = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < NetKeys.Length; i++)
                if (parse.GetValue(rates[i]) is { } v) kv[NetKeys[i]] = v;
            bool none = parse.GetValue(unlimited);
            if (none == (kv.Count > 0)) throw new UsageException("give either rates (--bps, --iops, ...) or --unlimited");
            var request = new UpdateRateLimitersRequest { Id = parse.GetValue(id)! };
            if (parse.GetValue(drive) is { } driveId)
            {
                if (kv.Keys.Any(k => !DriveKeys.Contains(k))) throw new ArgumentException("a drive takes --bps and --iops only");
                request.Drives.Add(new DriveRateLimiterUpdate { DriveId = driveId, RateLimiter = none ? new ApiRateLimiter() : Drive(kv, "--drive-id") });
            }
            else if (parse.GetValue(net) is { } netId)
            {
                var update = new NetworkInterfaceRateLimiterUpdate { IfaceId = netId };
                if (none) (update.RxRateLimiter, update.TxRateLimiter) = (new ApiRateLimiter(), new ApiRateLimiter());
                else
                {
                    var (rx, tx) = Net(kv, "--net-id");
                    // Only the directions named change: bps/iops name both, rx-*/tx-* one.
                    bool both = kv.ContainsKey("bps") || kv.ContainsKey("iops");
                    if (both || kv.Keys.Any(k => k.StartsWith("rx-", StringComparison.Ordinal))) update.RxRateLimiter = rx ?? new ApiRateLimiter();
                    if (both || kv.Keys.Any(k => k.StartsWith("tx-", StringComparison.Ordinal))) update.TxRateLimiter = tx ?? new ApiRateLimiter();
                }
                request.NetworkInterfaces.Add(update);
            }
            else if (parse.GetValue(rng))
            {
                if (kv.Keys.Any(k => !DriveKeys.Contains(k))) throw new ArgumentException("the entropy device takes --bps and --iops only");
                request.RngRateLimiter = none ? new ApiRateLimiter() : Drive(kv, "--rng");
            }
            else throw new UsageException("name a drive (--drive-id), an interface (--net-id) or the entropy device (--rng)");
            VmClientCommands.PrintVm(parse, await client.UpdateRateLimitersAsync(request, options));
        }, ct));
        return command;
    }
}
