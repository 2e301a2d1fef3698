using System.Globalization;
using System.Net;
using System.Text;

namespace FireSharp.Agent.Protocol;

/// <summary>
/// An extra drive the agent mounts at start-up: <c>SOURCE:TARGET[:ro|rw[:FSTYPE]]</c>, e.g.
/// <c>/dev/vdb:/opt:ro</c> (a read-only layer) or <c>/dev/vdc:/var/task</c> (the code drive).
/// Read-only and ext4 by default.
/// </summary>
public sealed record AgentMount(string Source, string Target, bool ReadOnly = true, string FsType = "ext4")
{
    /// <summary>Parses one <c>SOURCE:TARGET[:ro|rw[:FSTYPE]]</c>.</summary>
    public static bool TryParse(string spec, out AgentMount? mount, out string? error)
    {
        mount = null;
        var parts = spec.Split(':');
        if (parts.Length is < 2 or > 4) { error = $"mount '{spec}': expected SOURCE:TARGET[:ro|rw[:FSTYPE]]"; return false; }
        string source = parts[0], target = parts[1];
        bool readOnly = true;
        string fsType = "ext4";
        if (parts.Length >= 3)
        {
            switch (parts[2])
            {
                case "ro": readOnly = true; break;
                case "rw": readOnly = false; break;
                default: error = $"mount '{spec}': '{parts[2]}' is neither ro nor rw"; return false;
            }
        }
        if (parts.Length == 4) fsType = parts[3];
        var candidate = new AgentMount(source, target, readOnly, fsType);
        error = candidate.Validate();
        if (error is not null) return false;
        mount = candidate;
        return true;
    }

    /// <summary>Null when the mount can go on a kernel command line, else what is wrong.</summary>
    public string? Validate()
    {
        if (!IsPlainAbsolutePath(Source)) return $"mount source '{Source}' must be an absolute path without '..', spaces, ',' or ':'";
        if (!IsPlainAbsolutePath(Target) || Target == "/") return $"mount target '{Target}' must be an absolute path other than / without '..', spaces, ',' or ':'";
        if (FsType.Length == 0 || FsType.Length > 32 || !FsType.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9')))
            return $"mount file system type '{FsType}' is not a plain name like ext4";
        return null;
    }

    public override string ToString() => $"{Source}:{Target}:{(ReadOnly ? "ro" : "rw")}:{FsType}";

    private static bool IsPlainAbsolutePath(string path) =>
        path.Length is > 1 and < 256 && path[0] == '/'
        && !path.Split('/').Any(s => s is ".." or ".")
        && !path.Any(c => char.IsWhiteSpace(c) || c is ',' or ':' or '"' || char.IsControl(c));
}

/// <summary>
/// The agent's settings on the guest kernel command line. The VMM builds them with
/// <see cref="ToCmdline"/>; the agent reads /proc/cmdline with <see cref="Parse"/>.
/// <list type="table">
///   <item><term><c>firesharp.agent=1</c></term><description>start the agent from /init's start.d (rootfs image); unused when the agent is PID 1 (<c>rdinit=/usr/bin/firesharp-agent</c>)</description></item>
///   <item><term><c>firesharp.agent.port=52</c></term><description>vsock port to serve on</description></item>
///   <item><term><c>firesharp.agent.ready=53</c></term><description>host (CID 2) vsock port to report readiness to; 0 = do not</description></item>
///   <item><term><c>firesharp.hostname=NAME</c></term><description>sethostname</description></item>
///   <item><term><c>firesharp.mount=SRC:DST[:ro|rw[:FS]],...</c></term><description>extra drives, mounted in order</description></item>
///   <item><term><c>firesharp.ip=ADDR/PREFIX[,GATEWAY]</c></term><description>IPv4 address (and default route) of <c>firesharp.ip.dev</c> (default eth0), set with busybox ip; the kernel's <c>ip=</c> works too</description></item>
///   <item><term><c>firesharp.dns=IP[,IP]</c></term><description>written to /etc/resolv.conf</description></item>
/// </list>
/// </summary>
public sealed record AgentBootConfig
{
    public const string StartKey = "firesharp.agent";
    public const string PortKey = "firesharp.agent.port";
    public const string ReadyPortKey = "firesharp.agent.ready";
    public const string HostnameKey = "firesharp.hostname";
    public const string MountKey = "firesharp.mount";
    public const string IpKey = "firesharp.ip";
    public const string IpDeviceKey = "firesharp.ip.dev";
    public const string DnsKey = "firesharp.dns";

    /// <summary>Start the agent from the image's /init (adds <c>firesharp.agent=1</c>).</summary>
    public bool Start { get; init; } = true;
    public uint Port { get; init; } = AgentProtocol.DefaultPort;
    /// <summary>0 = do not report readiness.</summary>
    public uint ReadyPort { get; init; } = AgentProtocol.DefaultReadyPort;
    public string? Hostname { get; init; }
    public IReadOnlyList<AgentMount> Mounts { get; init; } = [];
    /// <summary>IPv4 address with prefix, e.g. 172.16.0.2/24.</summary>
    public string? Address { get; init; }
    public string? Gateway { get; init; }
    public string NetDevice { get; init; } = "eth0";
    public IReadOnlyList<string> Dns { get; init; } = [];

    /// <summary>Null when every value can go on a command line, else what is wrong.</summary>
    public string? Validate()
    {
        if (Port is 0 or uint.MaxValue) return $"agent port {Port} is out of range";
        if (ReadyPort == uint.MaxValue) return $"ready port {ReadyPort} is out of range";
        if (Hostname is not null && !IsHostname(Hostname)) return $"hostname '{Hostname}' must be 1-64 letters, digits, '-' or '.'";
        foreach (var m in Mounts)
            if (m.Validate() is { } e) return e;
        if (Address is not null && !IsCidr(Address)) return $"address '{Address}' must be IPv4/PREFIX, e.g. 172.16.0.2/24";
        if (Gateway is not null && (Address is null || !IsIpv4(Gateway))) return $"gateway '{Gateway}' needs an address and must be an IPv4 address";
        if (!IsIfName(NetDevice)) return $"network device '{NetDevice}' is not an interface name";
        foreach (var d in Dns)
            if (!IsIpv4(d)) return $"DNS server '{d}' must be an IPv4 address";
        return null;
    }

    /// <summary>The <c>firesharp.*</c> words for the kernel command line (space-separated).</summary>
    public string ToCmdline()
    {
        if (Validate() is { } error) throw new ArgumentException(error);
        var words = new List<string>();
        if (Start) words.Add($"{StartKey}=1");
        if (Port != AgentProtocol.DefaultPort) words.Add($"{PortKey}={Port}");
        if (ReadyPort != AgentProtocol.DefaultReadyPort) words.Add($"{ReadyPortKey}={ReadyPort}");
        if (Hostname is not null) words.Add($"{HostnameKey}={Hostname}");
        if (Mounts.Count > 0) words.Add($"{MountKey}={string.Join(',', Mounts)}");
        if (Address is not null) words.Add($"{IpKey}={Address}{(Gateway is null ? "" : "," + Gateway)}");
        if (NetDevice != "eth0") words.Add($"{IpDeviceKey}={NetDevice}");
        if (Dns.Count > 0) words.Add($"{DnsKey}={string.Join(',', Dns)}");
        return string.Join(' ', words);
    }

    /// <summary>
    /// Reads the agent's keys from a kernel command line (the rest is ignored). A malformed value
    /// is skipped and described in <paramref name="errors"/>; it never throws.
    /// </summary>
    public static AgentBootConfig Parse(string cmdline, ICollection<string>? errors = null)
    {
        var config = new AgentBootConfig { Start = false };
        foreach (var word in SplitCmdline(cmdline))
        {
            int eq = word.IndexOf('=');
            if (eq <= 0) continue;
            string key = word[..eq], value = word[(eq + 1)..];
            switch (key)
            {
                case StartKey:
                    config = config with { Start = value is "1" or "yes" or "true" or "on" };
                    break;
                case PortKey:
                    if (TryPort(value, allowZero: false, out uint port)) config = config with { Port = port };
                    else errors?.Add($"{PortKey}={value}: not a port number");
                    break;
                case ReadyPortKey:
                    if (TryPort(value, allowZero: true, out uint ready)) config = config with { ReadyPort = ready };
                    else errors?.Add($"{ReadyPortKey}={value}: not a port number");
                    break;
                case HostnameKey:
                    if (IsHostname(value)) config = config with { Hostname = value };
                    else errors?.Add($"{HostnameKey}={value}: not a host name");
                    break;
                case MountKey:
                    var mounts = new List<AgentMount>();
                    foreach (var spec in value.Split(',', StringSplitOptions.RemoveEmptyEntries))
                    {
                        if (AgentMount.TryParse(spec, out var m, out var e)) mounts.Add(m!);
                        else errors?.Add($"{MountKey}: {e}");
                    }
                    config = config with { Mounts = mounts };
                    break;
                case IpKey:
                    var ip = value.Split(',');
                    if (ip.Length <= 2 && IsCidr(ip[0]) && (ip.Length == 1 || IsIpv4(ip[1])))
                        config = config with { Address = ip[0], Gateway = ip.Length == 2 ? ip[1] : null };
                    else errors?.Add($"{IpKey}={value}: expected ADDR/PREFIX[,GATEWAY]");
                    break;
                case IpDeviceKey:
                    if (IsIfName(value)) config = config with { NetDevice = value };
                    else errors?.Add($"{IpDeviceKey}={value}: not an interface name");
                    break;
                case DnsKey:
                    var dns = value.Split(',', StringSplitOptions.RemoveEmptyEntries);
                    if (dns.All(IsIpv4)) config = config with { Dns = dns };
                    else errors?.Add($"{DnsKey}={value}: expected IPv4 addresses separated by ','");
                    break;
            }
        }
        return config;
    }

    /// <summary>Splits a command line into words the way the kernel does ("..." groups spaces).</summary>
    public static IEnumerable<string> SplitCmdline(string cmdline)
    {
        var word = new StringBuilder();
        bool quoted = false, any = false;
        foreach (char c in cmdline)
        {
            if (c == '"') { quoted = !quoted; any = true; continue; }
            if (!quoted && char.IsWhiteSpace(c))
            {
                if (any) yield return word.ToString();
                word.Clear();
                any = false;
                continue;
            }
            word.Append(c);
            any = true;
        }
        if (any) yield return word.ToString();
    }

    private static bool TryPort(string value, bool allowZero, out uint port) =>
        uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port != uint.MaxValue && (allowZero || port != 0);

    private static bool IsHostname(string s) =>
        s.Length is >= 1 and <= 64 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.');

    private static bool IsIfName(string s) =>
        s.Length is >= 1 and <= 15 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    private static bool IsIpv4(string s) =>
        s.Count(c => c == '.') == 3 && IPAddress.TryParse(s, out var a) && a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;

    private static bool IsCidr(string s)
    {
        int slash = s.IndexOf('/');
        return slash > 0 && IsIpv4(s[..slash])
            && int.TryParse(s[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) && prefix is >= 0 and <= 32;
    }
}
