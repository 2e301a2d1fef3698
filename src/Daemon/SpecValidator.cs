using System.Globalization;
using System.Net;
using FireSharp.Boot;
using FireSharp.Daemon.Vms;
using FireSharp.Devices.RateLimiting;

namespace FireSharp.Daemon;

/// <summary>What the host offers; the limits a VM spec is checked against.</summary>
public sealed record HostLimits(ulong MemoryBytes, int MaxVcpus)
{
    /// <summary>Reads /proc/meminfo and asks KVM; a value that cannot be read becomes "no limit".</summary>
    public static HostLimits Detect()
    {
        ulong mem = Kvm.Interop.ProcInfo.HostMemoryBytes();
        int maxVcpus = int.MaxValue;
        try
        {
            using var kvm = Kvm.KvmSystem.Open();
            maxVcpus = kvm.MaxVcpus;
        }
        catch (Kvm.KvmException) { }
        return new HostLimits(mem == 0 ? ulong.MaxValue : mem, maxVcpus);
    }
}

/// <summary>
/// Checks every request field before anything is created. Each failure is a <see cref="VmApiException"/>
/// naming the field by its proto path. Order: malformed (InvalidArgument), then beyond the host or the
/// daemon (ResourceExhausted), then well-formed but not supported yet (Unimplemented). How the devices fit
/// together (virtio-mmio slots, ids across kinds) is the device manager's to say: the worker reports it as
/// InvalidArgument on "spec".
/// </summary>
public static class SpecValidator
{
    public const int MaxIdLength = 63;
    public const int MaxLabels = 64;
    public const int MaxLabelKeyLength = 63;
    public const int MaxLabelValueLength = 253;
    public const int MaxDeviceIdLength = 32;
    public const int MaxTapNameLength = 15;
    /// <summary>The boot protocol's 2048 bytes, less the terminating NUL.</summary>
    public const int MaxCmdlineLength = BootLayout.CmdlineMaxBytes - 1;
    public const int MaxVcpus = 254;
    public const long MaxMemMib = 1024L * 1024; // 1 TiB, as MachineOptions.MaxMemoryBytes
    public const int MaxGraceSeconds = 3600;
    /// <summary>The kernel's smallest CFS quota, 1 ms, per the 100 ms period.</summary>
    public const int MinCpuQuotaMillicpus = 10;
    public const int MaxCpuQuotaMillicpus = MaxVcpus * 1000;

    /// <summary>A VM id: 1..63 of [a-z0-9_.-], starting with a letter or digit (a file name and a DNS-ish label).</summary>
    public static void ValidateId(string? id, string field = "id")
    {
        if (string.IsNullOrEmpty(id)) throw VmApiException.Invalid(field, "is required");
        if (id.Length > MaxIdLength) throw VmApiException.Invalid(field, $"is {id.Length} characters; at most {MaxIdLength}");
        if (!IsLowerAlnum(id[0])) throw VmApiException.Invalid(field, "must start with a lowercase letter or a digit");
        foreach (char c in id)
            if (!(IsLowerAlnum(c) || c is '_' or '.' or '-'))
                throw VmApiException.Invalid(field, $"contains '{Printable(c)}'; allowed are a-z, 0-9, '_', '.', '-'");
    }

    /// <summary>The whole CreateVm command. <paramref name="maxIdLength"/> can be lower than 63 when the state dir's path is long.</summary>
    public static void ValidateCreate(CreateVmCommand command, HostLimits host, int maxIdLength = MaxIdLength)
    {
        ValidateId(command.Id);
        if (command.Id.Length > maxIdLength)
            throw VmApiException.Invalid("id", $"is {command.Id.Length} characters; this daemon's state directory allows at most {maxIdLength}");
        ValidateLabels(command.Labels, "labels");
        ValidateSpec(command.Spec, host);
    }

    /// <summary>A CPU quota in thousandths of a CPU: 0 (the default), or 10 (the kernel's 1 ms per 100 ms) to one CPU per possible vCPU.</summary>
    public static void ValidateCpuQuota(int millicpus, string field)
    {
        if (millicpus == 0) return;
        if (millicpus < MinCpuQuotaMillicpus)
            throw VmApiException.Invalid(field, $"is {millicpus}; must be 0 (the default) or at least {MinCpuQuotaMillicpus} thousandths of a CPU");
        if (millicpus > MaxCpuQuotaMillicpus)
            throw VmApiException.Invalid(field, $"is {millicpus}; at most {MaxCpuQuotaMillicpus} ({MaxVcpus} CPUs)");
    }

    public static void ValidateLabels(IReadOnlyDictionary<string, string> labels, string field)
    {
        if (labels.Count > MaxLabels) throw VmApiException.Invalid(field, $"has {labels.Count} labels; at most {MaxLabels}");
        foreach (var (key, value) in labels)
        {
            if (key.Length == 0) throw VmApiException.Invalid($"{field}[\"\"]", "a label key must not be empty");
            if (key.Length > MaxLabelKeyLength) throw VmApiException.Invalid($"{field}[\"{Trim(key)}\"]", $"key is {key.Length} characters; at most {MaxLabelKeyLength}");
            if (!char.IsAsciiLetterOrDigit(key[0])) throw VmApiException.Invalid($"{field}[\"{Trim(key)}\"]", "key must start with a letter or a digit");
            foreach (char c in key)
                if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '/' or '-'))
                    throw VmApiException.Invalid($"{field}[\"{Trim(key)}\"]", $"key contains '{Printable(c)}'; allowed are letters, digits, '_', '.', '/', '-'");
            if (value.Length > MaxLabelValueLength) throw VmApiException.Invalid($"{field}[\"{key}\"]", $"value is {value.Length} characters; at most {MaxLabelValueLength}");
            foreach (char c in value)
                if (char.IsControl(c)) throw VmApiException.Invalid($"{field}[\"{key}\"]", "value contains a control character");
        }
    }

    /// <summary>A spec, with fields named by their API paths (spec.machine.mem_mib, ...).</summary>
    public static void ValidateSpec(VmConfig spec, HostLimits host)
    {
        // 1. Malformed fields.
        ValidateFile(spec.Kernel.Path, "spec.kernel.path", required: true);
        ValidateFile(spec.Kernel.InitrdPath ?? "", "spec.kernel.initrd_path", required: false);
        ValidateCmdline(spec.Kernel.Cmdline ?? "", "spec.kernel.cmdline");

        if (spec.Vcpus < 1) throw VmApiException.Invalid("spec.machine.vcpus", $"is {spec.Vcpus}; at least 1 is required");
        if (spec.Vcpus > MaxVcpus) throw VmApiException.Invalid("spec.machine.vcpus", $"is {spec.Vcpus}; at most {MaxVcpus} (xAPIC ids)");
        if (spec.MemMib < 1) throw VmApiException.Invalid("spec.machine.mem_mib", $"is {spec.MemMib}; at least 1 MiB is required");
        if (spec.MemMib > MaxMemMib) throw VmApiException.Invalid("spec.machine.mem_mib", $"is {spec.MemMib}; at most {MaxMemMib} MiB (1 TiB)");
        ValidateCpuQuota(spec.CpuQuotaMillicpus, "spec.machine.cpu_quota_millicpus");

        var driveIds = new HashSet<string>(StringComparer.Ordinal);
        int rootIndex = -1;
        for (int i = 0; i < spec.Drives.Count; i++)
        {
            var d = spec.Drives[i];
            string f = $"spec.drives[{i}]";
            ValidateDeviceId(d.Id, f + ".id");
            if (!driveIds.Add(d.Id)) throw VmApiException.Invalid(f + ".id", $"'{d.Id}' is used by another drive");
            ValidateFile(d.Path, f + ".path", required: true);
            ValidateRateLimiter(d.RateLimiter, f + ".rate_limiter");
            if (d.Root)
            {
                if (rootIndex >= 0) throw VmApiException.Invalid(f + ".root", $"spec.drives[{rootIndex}] is already the root drive");
                rootIndex = i;
            }
        }

        var nicIds = new HashSet<string>(StringComparer.Ordinal);
        var taps = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < spec.NetworkInterfaces.Count; i++)
        {
            var n = spec.NetworkInterfaces[i];
            string f = $"spec.network_interfaces[{i}]";
            ValidateDeviceId(n.Id, f + ".id");
            if (!nicIds.Add(n.Id)) throw VmApiException.Invalid(f + ".id", $"'{n.Id}' is used by another interface");
            if (n.Tap is { } tap) // null: the worker creates one
            {
                ValidateTapName(tap, f + ".tap");
                if (!taps.Add(tap)) throw VmApiException.Invalid(f + ".tap", $"'{tap}' is used by another interface");
            }
            if (!string.IsNullOrEmpty(n.Mac)) ValidateMac(n.Mac, f + ".mac");
            if (!string.IsNullOrEmpty(n.Ip)) ValidateIp(n.Ip, f + ".ip");
            ValidateRateLimiter(n.RxRateLimiter, f + ".rx_rate_limiter");
            ValidateRateLimiter(n.TxRateLimiter, f + ".tx_rate_limiter");
        }

        if (spec.RngRateLimiter is not null && !spec.Rng) throw VmApiException.Invalid("spec.rng_rate_limiter", "needs an entropy device (spec.rng)");
        ValidateRateLimiter(spec.RngRateLimiter, "spec.rng_rate_limiter");
        ValidateNetns(spec.NetnsPath ?? "", "spec.netns_path");

        if (spec.Vsock is not null && spec.Vsock.GuestCid is < 3 or 0xFFFF_FFFF)
            throw VmApiException.Invalid("spec.vsock.guest_cid", $"is {spec.Vsock.GuestCid}; 0, 1, 2 and 4294967295 are reserved");

        if (spec.Agent)
        {
            // The agent's words go on the kernel command line too: the whole line must still fit.
            int length = AgentCmdline(spec).Length;
            if (length > MaxCmdlineLength)
                throw VmApiException.Invalid("spec.kernel.cmdline", $"with the agent's settings the command line is {length} bytes; at most {MaxCmdlineLength}");
        }

        // 2. Beyond what the host has.
        if ((ulong)spec.MemMib * 1024 * 1024 > host.MemoryBytes)
            throw VmApiException.Exhausted("spec.machine.mem_mib", $"{spec.MemMib} MiB is more than the host's {host.MemoryBytes / (1024 * 1024)} MiB");
        if (spec.Vcpus > host.MaxVcpus)
            throw VmApiException.Exhausted("spec.machine.vcpus", $"{spec.Vcpus} vCPUs is more than this host's KVM allows ({host.MaxVcpus})");
        if (spec.NetworkInterfaces.Count(n => !string.IsNullOrEmpty(n.Ip)) > 1)
            throw VmApiException.Invalid("spec.network_interfaces", "only one interface can have an ip (the guest kernel takes one ip= setting)");
    }

    /// <summary>
    /// The kernel command line the worker gets: the spec's (or, when empty and the agent is on, the
    /// VMM's Linux default) followed by the agent's <c>firesharp.*</c> words when spec.agent is set.
    /// Null means "the VMM's default" (no agent, no cmdline).
    /// </summary>
    public static string? EffectiveCmdline(VmConfig spec)
    {
        if (!spec.Agent) return string.IsNullOrEmpty(spec.Kernel.Cmdline) ? null : spec.Kernel.Cmdline;
        return AgentCmdline(spec);
    }

    private static string AgentCmdline(VmConfig spec)
    {
        string baseLine = string.IsNullOrEmpty(spec.Kernel.Cmdline) ? FireSharp.Vm.MicroVm.DefaultLinuxCmdline : spec.Kernel.Cmdline;
        return baseLine + " " + new FireSharp.Agent.Protocol.AgentBootConfig().ToCmdline();
    }

    public static void ValidateFile(string path, string field, bool required)
    {
        if (path.Length == 0)
        {
            if (required) throw VmApiException.Invalid(field, "is required");
            return;
        }
        if (path.Contains('\0')) throw VmApiException.Invalid(field, "contains a NUL character");
        if (!Path.IsPathFullyQualified(path)) throw VmApiException.Invalid(field, $"'{Trim(path)}' is not an absolute path");
        if (Directory.Exists(path)) throw VmApiException.Invalid(field, $"'{path}' is a directory");
        if (!File.Exists(path)) throw VmApiException.Invalid(field, $"'{path}' does not exist (or is not readable by the daemon)");
    }

    /// <summary>An existing network namespace file (nsfs, of type net), by absolute path; empty: none.</summary>
    public static void ValidateNetns(string path, string field)
    {
        if (path.Length == 0) return;
        if (path.Contains('\0')) throw VmApiException.Invalid(field, "contains a NUL character");
        if (!Path.IsPathFullyQualified(path)) throw VmApiException.Invalid(field, $"'{Trim(path)}' is not an absolute path");
        if (Directory.Exists(path)) throw VmApiException.Invalid(field, $"'{path}' is a directory, not a network namespace");
        if (!File.Exists(path)) throw VmApiException.Invalid(field, $"'{path}' does not exist (ip netns add NAME makes /run/netns/NAME)");
        int? type = FireSharp.Kvm.Interop.Exec.NamespaceTypeAt(path, out string? problem);
        if (type is null) throw VmApiException.Invalid(field, $"'{path}' {problem}");
        if (type != FireSharp.Kvm.Interop.Exec.CLONE_NEWNET) throw VmApiException.Invalid(field, $"'{path}' is a namespace, but not a network namespace");
    }

    public static void ValidateCmdline(string cmdline, string field)
    {
        if (cmdline.Length > MaxCmdlineLength) throw VmApiException.Invalid(field, $"is {cmdline.Length} bytes; at most {MaxCmdlineLength}");
        foreach (char c in cmdline)
            if (c is < ' ' or > '~') throw VmApiException.Invalid(field, $"contains '{Printable(c)}'; only printable ASCII is allowed");
    }

    /// <summary>A rate limiter's buckets (size >= 1, one_time_burst >= 0, refill_time_ms 1..a day); InvalidArgument naming the bucket field.</summary>
    public static void ValidateRateLimiter(RateLimiterSpec? limiter, string field)
    {
        try
        {
            limiter?.Validate(field);
        }
        catch (RateLimiterConfigException e)
        {
            throw VmApiException.Invalid(e.Field, e.Detail);
        }
    }

    /// <summary>An update's changes: device ids and limiters (whether the VM has the devices is its worker's to say).</summary>
    public static void ValidateUpdate(UpdateRateLimitersCommand command)
    {
        ValidateId(command.Id);
        if (command.Changes.Count == 0) throw VmApiException.Invalid("drives", "the request names no drive, no interface and no entropy device");
        var seen = new HashSet<(RateLimiterTarget, string)>();
        foreach (var c in command.Changes)
        {
            if (c.Target != RateLimiterTarget.Entropy) ValidateDeviceId(c.DeviceId, c.IdField);
            if (!seen.Add((c.Target, c.DeviceId))) throw VmApiException.Invalid(c.IdField, $"'{c.DeviceId}' is named twice");
            ValidateRateLimiter(c.Limiter, c.LimiterField);
        }
    }

    public static void ValidateDeviceId(string id, string field)
    {
        if (id.Length == 0) throw VmApiException.Invalid(field, "is required");
        if (id.Length > MaxDeviceIdLength) throw VmApiException.Invalid(field, $"is {id.Length} characters; at most {MaxDeviceIdLength}");
        foreach (char c in id)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                throw VmApiException.Invalid(field, $"contains '{Printable(c)}'; allowed are letters, digits, '_', '-'");
    }

    public static void ValidateTapName(string name, string field)
    {
        if (name.Length == 0) throw VmApiException.Invalid(field, "is empty");
        if (name.Length > MaxTapNameLength) throw VmApiException.Invalid(field, $"is {name.Length} characters; Linux allows at most {MaxTapNameLength}");
        if (name is "." or "..") throw VmApiException.Invalid(field, $"'{name}' is not a device name");
        foreach (char c in name)
            if (c is '/' or ':' || char.IsWhiteSpace(c) || char.IsControl(c) || c > '~')
                throw VmApiException.Invalid(field, $"contains '{Printable(c)}', which a Linux device name cannot");
    }

    public static void ValidateMac(string mac, string field)
    {
        var parts = mac.Split(':');
        if (parts.Length != 6 || parts.Any(p => p.Length != 2 || !p.All(char.IsAsciiHexDigit)))
            throw VmApiException.Invalid(field, $"'{Trim(mac)}' is not a MAC address (aa:bb:cc:dd:ee:ff)");
        byte first = byte.Parse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        if ((first & 1) != 0) throw VmApiException.Invalid(field, $"'{mac}' is a multicast address; a NIC needs a unicast one");
        if (parts.All(p => p == "00")) throw VmApiException.Invalid(field, "00:00:00:00:00:00 is not a usable address");
    }

    public static void ValidateIp(string ip, string field)
    {
        int slash = ip.IndexOf('/');
        if (slash < 0) throw VmApiException.Invalid(field, $"'{Trim(ip)}' has no prefix length (10.0.0.2/24)");
        if (!IPAddress.TryParse(ip.AsSpan(0, slash), out var addr) || addr.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork
            || ip.AsSpan(0, slash).Count('.') != 3)
            throw VmApiException.Invalid(field, $"'{Trim(ip)}' is not an IPv4 address");
        if (!int.TryParse(ip.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) || prefix is < 1 or > 32)
            throw VmApiException.Invalid(field, $"'{Trim(ip)}' has a prefix length outside 1..32");
    }

    /// <summary>StopVm's grace period in seconds; 0 means the default.</summary>
    public static void ValidateGrace(int seconds, string field)
    {
        if (seconds < 0) throw VmApiException.Invalid(field, $"is {seconds}; must not be negative");
        if (seconds > MaxGraceSeconds) throw VmApiException.Invalid(field, $"is {seconds}; at most {MaxGraceSeconds}");
    }

    private static bool IsLowerAlnum(char c) => c is (>= 'a' and <= 'z') or (>= '0' and <= '9');

    private static string Printable(char c) => c is < ' ' or > '~' ? $"\\u{(int)c:x4}" : c.ToString();

    private static string Trim(string s) => s.Length <= 64 ? s : s[..64] + "...";
}
