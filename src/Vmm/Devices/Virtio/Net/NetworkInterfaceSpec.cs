using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using FireSharp.Devices.RateLimiting;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// A guest's IPv4 settings, given to Linux as the kernel parameter
/// <c>ip=&lt;guest&gt;::&lt;gateway&gt;:&lt;netmask&gt;::&lt;device&gt;:off</c> (CONFIG_IP_PNP, no autoconfiguration).
/// </summary>
public sealed record NetIpv4Config(IPAddress Address, int PrefixLength, IPAddress? Gateway = null)
{
    /// <summary>Parses "10.0.0.2/24"; throws <see cref="NetConfigException"/> (<see cref="NetConfigError.InvalidIp"/>).</summary>
    public static NetIpv4Config Parse(string cidr, string? gateway = null, string field = "ip")
    {
        int slash = cidr.IndexOf('/');
        if (slash < 0) throw new NetConfigException(field, NetConfigError.InvalidIp, $"'{cidr}' has no prefix length (10.0.0.2/24)");
        var address = ParseV4(cidr[..slash], field);
        if (!int.TryParse(cidr.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) || prefix is < 1 or > 32)
            throw new NetConfigException(field, NetConfigError.InvalidIp, $"'{cidr}' has a prefix length outside 1..32");
        return new NetIpv4Config(address, prefix, string.IsNullOrEmpty(gateway) ? null : ParseV4(gateway, field));
    }

    private static IPAddress ParseV4(string text, string field) =>
        IPAddress.TryParse(text, out var a) && a.AddressFamily == AddressFamily.InterNetwork && text.Count(c => c == '.') == 3
            ? a : throw new NetConfigException(field, NetConfigError.InvalidIp, $"'{text}' is not an IPv4 address");

    public IPAddress Netmask
    {
        get
        {
            uint mask = PrefixLength == 0 ? 0 : uint.MaxValue << (32 - PrefixLength);
            return new IPAddress([(byte)(mask >> 24), (byte)(mask >> 16), (byte)(mask >> 8), (byte)mask]);
        }
    }

    /// <summary>The kernel parameter for the guest interface <paramref name="device"/> (eth0, ...).</summary>
    public string KernelParameter(string device) => $"ip={Address}::{Gateway?.ToString() ?? ""}:{Netmask}::{device}:off";

    public override string ToString() => $"{Address}/{PrefixLength}" + (Gateway is null ? "" : $" via {Gateway}");
}

/// <summary>
/// One virtio-net interface of a VM: its id (stable across snapshots), the host tap it is wired to (null = a tap
/// FireSharp creates and removes), the guest MAC (null = derived, locally administered) and optional IPv4
/// settings for the guest kernel.
/// </summary>
public sealed record NetworkInterfaceSpec : IDeviceConfig
{
    public const int MaxIdLength = 32;

    public string Kind => NetDeviceKind.Name;

    public required string Id { get; init; }

    /// <summary>An existing tap (or one created with that name); null = a new automatic one (fstapN).</summary>
    public string? TapName { get; init; }

    /// <summary>"aa:bb:cc:dd:ee:ff"; null = <see cref="DeriveMac"/> from the id and the tap name.</summary>
    public string? Mac { get; init; }

    public NetIpv4Config? Ipv4 { get; init; }

    /// <summary>The limiter of what the guest receives (frames from the tap); null = unlimited.</summary>
    public RateLimiterSpec? RxRateLimiter { get; init; }

    /// <summary>The limiter of what the guest sends (frames to the tap); null = unlimited.</summary>
    public RateLimiterSpec? TxRateLimiter { get; init; }

    /// <summary>Parses a MAC address; throws <see cref="NetConfigException"/> (<see cref="NetConfigError.InvalidMac"/>) for a bad, multicast or zero one.</summary>
    public static byte[] ParseMac(string mac, string field = "mac")
    {
        var parts = mac.Split(':');
        var bytes = new byte[6];
        if (parts.Length != 6 || parts.Any(p => p.Length != 2 || !p.All(char.IsAsciiHexDigit)))
            throw new NetConfigException(field, NetConfigError.InvalidMac, $"'{mac}' is not a MAC address (aa:bb:cc:dd:ee:ff)");
        for (int i = 0; i < 6; i++) bytes[i] = byte.Parse(parts[i], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        if ((bytes[0] & 1) != 0)
            throw new NetConfigException(field, NetConfigError.InvalidMac, $"'{mac}' is a multicast address; a NIC needs a unicast one");
        if (bytes.All(b => b == 0))
            throw new NetConfigException(field, NetConfigError.InvalidMac, "00:00:00:00:00:00 is not a usable address");
        return bytes;
    }

    public static string FormatMac(ReadOnlySpan<byte> mac) =>
        string.Join(':', mac.ToArray().Select(b => b.ToString("x2", CultureInfo.InvariantCulture)));

    /// <summary>
    /// A locally administered unicast MAC (02:fc:xx:xx:xx:xx) from a hash of <paramref name="seed"/>: the same seed
    /// gives the same address, so a VM keeps its MAC across runs on the same tap.
    /// </summary>
    public static byte[] DeriveMac(string seed)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(seed));
        return [0x02, 0xfc, hash[0], hash[1], hash[2], hash[3]];
    }

    /// <summary>The MAC this interface gets once its tap is known.</summary>
    public byte[] EffectiveMac(string tapName, string field = "mac") =>
        Mac is { } m ? ParseMac(m, field) : DeriveMac($"{Id}/{tapName}");

    public static string FieldName(int index) => $"net[{index.ToString(CultureInfo.InvariantCulture)}]";

    /// <summary>
    /// Checks a VM's list: ids (1..32 of [A-Za-z0-9_-], unique), tap names (valid, not twice), MACs (valid, not
    /// twice), at most one interface with IPv4 settings (Linux takes one <c>ip=</c>). Throws <see cref="NetConfigException"/>.
    /// </summary>
    public static void Validate(IReadOnlyList<NetworkInterfaceSpec> nics)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var taps = new HashSet<string>(StringComparer.Ordinal);
        var macs = new HashSet<string>(StringComparer.Ordinal);
        int withIp = 0;
        for (int i = 0; i < nics.Count; i++)
        {
            var n = nics[i];
            string f = FieldName(i);
            if (string.IsNullOrEmpty(n.Id) || n.Id.Length > MaxIdLength || !n.Id.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                throw new NetConfigException(f, NetConfigError.InvalidId, $"interface id '{n.Id}' must be 1..{MaxIdLength} characters of letters, digits, '_', '-'");
            if (!ids.Add(n.Id)) throw new NetConfigException(f, NetConfigError.InvalidId, $"interface id '{n.Id}' is used twice");
            if (n.TapName is { } tap)
            {
                TapBackend.ValidateName(tap, f);
                if (!taps.Add(tap)) throw new NetConfigException(f, NetConfigError.TapBusy, $"tap '{tap}' is given to two interfaces");
            }
            if (n.Mac is { } mac && !macs.Add(FormatMac(ParseMac(mac, f))))
                throw new NetConfigException(f, NetConfigError.InvalidMac, $"MAC {mac} is given to two interfaces");
            n.RxRateLimiter?.Validate(f + ".rx_rate_limiter");
            n.TxRateLimiter?.Validate(f + ".tx_rate_limiter");
            if (n.Ipv4 is not null && ++withIp > 1)
                throw new NetConfigException(f, NetConfigError.InvalidIp, "only one interface can have guest IPv4 settings (the kernel takes one ip= parameter)");
        }
    }

    /// <summary>
    /// The CLI's <c>--net</c> value: <c>TAP|auto[,MAC][,ip=A.B.C.D/N][,gw=A.B.C.D][,RATE=N...]</c> (the MAC may also be
    /// written <c>mac=...</c>). RATE is <c>bps</c> or <c>iops</c> for both directions, or <c>rx-bps</c>, <c>rx-iops</c>,
    /// <c>tx-bps</c>, <c>tx-iops</c> for one (a direction's own setting wins), N with K/M/G suffixes
    /// (<see cref="RateLimiterSpec.PerSecond"/>). Throws <see cref="NetConfigException"/> or <see cref="RateLimiterConfigException"/>.
    /// </summary>
    public static NetworkInterfaceSpec Parse(string text, string id, string field = "--net")
    {
        var parts = text.Split(',');
        string host = parts[0];
        string? tap = host == "auto" ? null : host;
        if (tap is not null) TapBackend.ValidateName(tap, field);
        string? mac = null, ip = null, gw = null;
        var rates = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var p in parts.Skip(1))
        {
            int eq = p.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? "" : p[..eq];
            if (key is "bps" or "iops" or "rx-bps" or "rx-iops" or "tx-bps" or "tx-iops")
            {
                if (!rates.TryAdd(key, RateLimiterSpec.ParseAmount(p[(eq + 1)..], $"{field} {key}")))
                    throw new RateLimiterConfigException($"{field} {key}", RateLimiterConfigError.InvalidSyntax, $"{key}= is given twice in '{text}'");
            }
            else if (p.StartsWith("ip=", StringComparison.Ordinal)) ip = p[3..];
            else if (p.StartsWith("gw=", StringComparison.Ordinal)) gw = p[3..];
            else if (p.StartsWith("mac=", StringComparison.Ordinal)) mac = p[4..];
            else if (mac is null && p.Contains(':')) mac = p;
            else throw new NetConfigException(field, NetConfigError.InvalidMac, $"'{p}' in '{text}' is neither a MAC address nor ip=/gw= (TAP|auto[,MAC][,ip=A.B.C.D/N][,gw=A.B.C.D])");
        }
        if (mac is not null) ParseMac(mac, field);
        if (gw is not null && ip is null) throw new NetConfigException(field, NetConfigError.InvalidIp, "gw= needs ip=");
        return new NetworkInterfaceSpec
        {
            Id = id,
            TapName = tap,
            Mac = mac,
            Ipv4 = ip is null ? null : NetIpv4Config.Parse(ip, gw, field),
            RxRateLimiter = RateLimiterSpec.PerSecond(Rate(rates, "rx-bps", "bps"), Rate(rates, "rx-iops", "iops")),
            TxRateLimiter = RateLimiterSpec.PerSecond(Rate(rates, "tx-bps", "bps"), Rate(rates, "tx-iops", "iops")),
        };
    }

    private static long? Rate(Dictionary<string, long> rates, string own, string both) =>
        rates.TryGetValue(own, out long n) || rates.TryGetValue(both, out n) ? n : null;
}
