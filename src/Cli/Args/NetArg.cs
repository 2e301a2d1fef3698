namespace FireSharp.Cli.Args;

/// <summary>
/// The one <c>--net</c> grammar of <c>run</c> and <c>vm create</c>:
/// <code>[tap=]TAP|auto[,id=ID][,mac=MAC][,ip=A.B.C.D/N][,gw=A.B.C.D][,bps=N][,iops=N][,rx-bps=N][,rx-iops=N][,tx-bps=N][,tx-iops=N]</code>
/// comma-separated, in any order; the first item without '=' is the tap (an existing one, or <c>auto</c>: one made
/// for the VM and removed with it). <c>id</c> is the interface's id (default <c>net</c>N); <c>ip</c>/<c>gw</c> the
/// guest's IPv4 settings (<c>gw</c>: <c>run</c> only); the rates as <see cref="DriveArg"/>'s, a direction's own
/// key winning over the both-directions one. <c>run</c>'s older bare MAC (<c>tap0,02:00:00:00:00:01</c>) still parses.
/// </summary>
public sealed record NetArg
{
    public const string Grammar = "[tap=]TAP|auto[,id=ID][,mac=MAC][,ip=A.B.C.D/N][,gw=A.B.C.D][,bps=N][,iops=N][,rx-bps=N][,tx-bps=N][,rx-iops=N][,tx-iops=N]";

    public static readonly string[] RateKeys = ["bps", "iops", "rx-bps", "rx-iops", "tx-bps", "tx-iops"];

    public string? Tap { get; init; }
    public bool Auto { get; init; }
    public string? Id { get; init; }
    public string? Mac { get; init; }
    public string? Ip { get; init; }
    public string? Gateway { get; init; }
    public IReadOnlyDictionary<string, long> Rates { get; init; } = new Dictionary<string, long>();

    public static NetArg Parse(string text, string what = "--net")
    {
        ArgumentNullException.ThrowIfNull(text);
        var n = new NetArg();
        var rates = new Dictionary<string, long>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var parts = text.Split(',');
        for (int i = 0; i < parts.Length; i++)
        {
            string p = parts[i];
            int at = p.IndexOf('=');
            string key = at < 0 ? p : p[..at];
            string value = at < 0 ? "" : p[(at + 1)..];
            if (at < 0)
            {
                if (p == "auto") (key, value) = ("tap", "auto");
                else if (i == 0) (key, value) = ("tap", p);
                else if (p.Contains(':')) (key, value) = ("mac", p); // run's older bare MAC
                else throw Bad(what, text, $"'{p}' is not a key=value");
            }
            if (!seen.Add(key)) throw Bad(what, text, $"{key}= given twice");
            if (value.Length == 0) throw Bad(what, text, $"{key}= has no value");
            if (RateKeys.Contains(key))
            {
                rates[key] = Size.Parse(value, 1, $"{what} {key}=");
                continue;
            }
            n = key switch
            {
                "tap" => value == "auto" ? n with { Auto = true } : n with { Tap = value },
                "id" => n with { Id = value },
                "mac" => n with { Mac = value },
                "ip" => n with { Ip = value },
                "gw" => n with { Gateway = value },
                _ => throw Bad(what, text, $"unknown key '{key}'"),
            };
        }
        if (n.Tap is null && !n.Auto) throw Bad(what, text, "no tap (a tap name or auto)");
        if (n.Gateway is not null && n.Ip is null) throw Bad(what, text, "gw= needs ip=");
        return n with { Rates = rates };
    }

    /// <summary>The rate of a direction: its own key (rx-bps), else the both-directions one (bps).</summary>
    public long? Rate(string own, string both) => Rates.TryGetValue(own, out long v) || Rates.TryGetValue(both, out v) ? v : null;

    /// <summary>The same interface in the Vmm's own syntax (<c>TAP|auto[,mac=..][,ip=..][,gw=..][,rates]</c>), for its parser and checks.</summary>
    public string ToVmmSyntax()
    {
        var parts = new List<string> { Auto ? "auto" : Tap! };
        if (Mac is not null) parts.Add("mac=" + Mac);
        if (Ip is not null) parts.Add("ip=" + Ip);
        if (Gateway is not null) parts.Add("gw=" + Gateway);
        parts.AddRange(Rates.Select(r => $"{r.Key}={r.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)}"));
        return string.Join(',', parts);
    }

    private static ArgException Bad(string what, string text, string why) => new($"{what} {text}: {why}", $"{what} {Grammar}");
}
