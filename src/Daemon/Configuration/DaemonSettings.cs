using System.ComponentModel.DataAnnotations;
using System.Globalization;

namespace FireSharp.Daemon.Configuration;

/// <summary>
/// The daemon's configuration as it is written: one property per key of /etc/firesharp/config.json, of
/// <c>FIRESHARP_KEY</c> and of <c>--Key=value</c> (case-insensitive), bound by the configuration-binding source
/// generator (<see cref="DaemonConfiguration"/>) and checked at start by <see cref="DaemonSettingsAnnotations"/> (the
/// ranges below) and <see cref="DaemonSettingsRules"/> (everything else). <see cref="ToOptions"/> turns it into the
/// <see cref="DaemonOptions"/> the daemon runs on; the property docs are there.
/// Defaults are <see cref="DaemonOptions"/>'s: a key that is not set keeps its default.
/// </summary>
public sealed class DaemonSettings
{
    private static readonly DaemonOptions Defaults = new();

    public string Socket { get; set; } = Defaults.Socket;
    public string? SocketGroup { get; set; }
    /// <summary>Octal, like 0660.</summary>
    public string SocketMode { get; set; } = Octal(Defaults.SocketMode);
    public List<string> SocketAllowedUsers { get; set; } = [];
    public List<string> SocketAllowedGroups { get; set; } = [];
    public string? TcpListen { get; set; }
    /// <summary>host:port, or off.</summary>
    public string? MetricsListen { get; set; } = Defaults.MetricsListen;
    public string? OtlpEndpoint { get; set; }
    public string OtlpProtocol { get; set; } = Defaults.OtlpProtocol;
    public string? TraceFile { get; set; }
    public string? TlsCertificate { get; set; }
    public string? TlsKey { get; set; }
    public string? TlsClientCa { get; set; }
    public string? TlsClientCrl { get; set; }
    /// <summary>name=viewer|operator|admin entries.</summary>
    public List<string> TlsClients { get; set; } = [];
    public string StateDir { get; set; } = Defaults.StateDir;
    public List<string> AllowedPathRoots { get; set; } = [];
    public bool AllowBlockDevices { get; set; }
    public string? WorkerBinary { get; set; }

    [Range(1, 24 * 3600)]
    public int WorkerStartTimeoutSeconds { get; set; } = (int)Defaults.WorkerStartTimeout.TotalSeconds;

    public bool Seccomp { get; set; } = Defaults.Seccomp;
    public bool FunctionCpuShare { get; set; } = Defaults.FunctionCpuShare;
    public string? SeccompTestTrigger { get; set; }

    [Range(1, 1_000_000)]
    public int MaxVms { get; set; } = Defaults.MaxVms;

    [Range(0.01, 1000.0)]
    public double MemoryOvercommit { get; set; } = Defaults.MemoryOvercommit;

    [Range(0, 3600)]
    public int DefaultStopGraceSeconds { get; set; } = (int)Defaults.DefaultStopGrace.TotalSeconds;

    public bool StopVmsOnShutdown { get; set; }
    public string LogLevel { get; set; } = Defaults.LogLevel;
    public string? LogJsonFile { get; set; }

    [Range(1, 1_000_000)]
    public int WorkerLogLinesPerSecond { get; set; } = Defaults.WorkerLogLinesPerSecond;

    [Range(0, long.MaxValue)]
    public long WorkerLogMaxBytes { get; set; } = Defaults.WorkerLogMaxBytes;

    [Range(0, long.MaxValue)]
    public long ConsoleLogMaxBytes { get; set; } = Defaults.ConsoleLogMaxBytes;
    /// <summary>Auto, Required or Off.</summary>
    public string Cgroups { get; set; } = Defaults.Cgroups.ToString();
    public string CgroupRoot { get; set; } = Defaults.CgroupRoot;
    public string CgroupParent { get; set; } = Defaults.CgroupParent;

    [Range(16, 64 * 1024)]
    public long VmmMemoryAllowanceMib { get; set; } = Defaults.VmmMemoryAllowanceMib;

    [Range(16, 1 << 20)]
    public int VmPidsAllowance { get; set; } = Defaults.VmPidsAllowance;

    [Range(1, 10000)]
    public int? CgroupIoWeight { get; set; }

    [Range(1, 1_000_000)]
    public int FunctionConcurrencyLimit { get; set; } = Defaults.FunctionConcurrencyLimit;

    public string? FunctionKernel { get; set; }
    public string? FunctionRootfs { get; set; }
    public bool? Jail { get; set; }
    public uint JailUidBase { get; set; } = Defaults.JailUidBase;
    public uint JailUidCount { get; set; } = Defaults.JailUidCount;
    public uint? JailUid { get; set; }
    public uint? JailGid { get; set; }
    public ulong JailFileSizeLimitBytes { get; set; }
    public ulong JailOpenFilesLimit { get; set; } = Defaults.JailOpenFilesLimit;
    public string JailUnshare { get; set; } = Defaults.JailUnshare;

    /// <summary>
    /// The options these settings give, adding to <paramref name="problems"/> one line per value that cannot be
    /// turned into its option (an unknown user, a malformed mode...; the option keeps its default then, so the other
    /// checks still run). The checks that need only the options (<see cref="DaemonOptions.Problems"/>) are not made here.
    /// </summary>
    public DaemonOptions ToOptions(List<string> problems)
    {
        ArgumentNullException.ThrowIfNull(problems);
        var uids = new List<uint>();
        foreach (var u in Trimmed(SocketAllowedUsers))
            if (Kvm.Interop.ProcInfo.UserId(u) is { } uid) uids.Add((uint)uid);
            else problems.Add(DaemonOptions.Bad(nameof(SocketAllowedUsers), u, "is not a user in /etc/passwd or a uid"));
        var gids = new List<uint>();
        foreach (var g in Trimmed(SocketAllowedGroups))
            if (Kvm.Interop.ProcInfo.GroupIdOf(g) is { } gid) gids.Add((uint)gid);
            else problems.Add(DaemonOptions.Bad(nameof(SocketAllowedGroups), g, "is not a group in /etc/group or a gid"));
        UnixFileMode mode = Defaults.SocketMode;
        try { mode = (UnixFileMode)Convert.ToInt32(SocketMode, 8) & (UnixFileMode)0x1ff; }
        catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
        {
            problems.Add(DaemonOptions.Bad(nameof(SocketMode), SocketMode, "must be octal, like 0660"));
        }
        var cgroups = Enum.TryParse<Isolation.CgroupMode>(Cgroups, ignoreCase: true, out var cg) && Enum.IsDefined(cg) && !int.TryParse(Cgroups, out _)
            ? cg : (Isolation.CgroupMode?)null;
        if (cgroups is null) problems.Add(DaemonOptions.Bad(nameof(Cgroups), Cgroups, "must be Auto, Required or Off"));
        var clients = ParseClients(Trimmed(TlsClients), problems);
        return new DaemonOptions
        {
            Socket = Socket,
            SocketGroup = NullIfEmpty(SocketGroup),
            SocketMode = mode,
            SocketAllowedUids = uids,
            SocketAllowedGids = gids,
            TcpListen = NullIfEmpty(TcpListen),
            MetricsListen = NullIfEmpty(MetricsListen) is { } ml && ml.ToLowerInvariant() is not ("off" or "none" or "false") ? ml : null,
            OtlpEndpoint = NullIfEmpty(OtlpEndpoint) is { } otlp && otlp.ToLowerInvariant() is not ("off" or "none" or "false") ? otlp : null,
            OtlpProtocol = OtlpProtocol,
            TraceFile = NullIfEmpty(TraceFile),
            TlsCertificate = NullIfEmpty(TlsCertificate),
            TlsKey = NullIfEmpty(TlsKey),
            TlsClientCa = NullIfEmpty(TlsClientCa),
            TlsClientCrl = NullIfEmpty(TlsClientCrl),
            TlsClients = clients,
            StateDir = StateDir,
            AllowedPathRoots = Trimmed(AllowedPathRoots) is { Count: > 0 } roots ? roots : null,
            AllowBlockDevices = AllowBlockDevices,
            WorkerBinary = NullIfEmpty(WorkerBinary),
            WorkerStartTimeout = TimeSpan.FromSeconds(WorkerStartTimeoutSeconds),
            Seccomp = Seccomp,
            FunctionCpuShare = FunctionCpuShare,
            SeccompTestTrigger = NullIfEmpty(SeccompTestTrigger),
            MaxVms = MaxVms,
            MemoryOvercommit = MemoryOvercommit,
            DefaultStopGrace = TimeSpan.FromSeconds(DefaultStopGraceSeconds),
            StopVmsOnShutdown = StopVmsOnShutdown,
            LogLevel = LogLevel,
            LogJsonFile = NullIfEmpty(LogJsonFile),
            WorkerLogLinesPerSecond = WorkerLogLinesPerSecond,
            WorkerLogMaxBytes = WorkerLogMaxBytes,
            ConsoleLogMaxBytes = ConsoleLogMaxBytes,
            Cgroups = cgroups ?? Defaults.Cgroups,
            CgroupRoot = CgroupRoot,
            CgroupParent = CgroupParent,
            VmmMemoryAllowanceMib = VmmMemoryAllowanceMib,
            VmPidsAllowance = VmPidsAllowance,
            CgroupIoWeight = CgroupIoWeight,
            FunctionConcurrencyLimit = FunctionConcurrencyLimit,
            FunctionKernel = NullIfEmpty(FunctionKernel),
            FunctionRootfs = NullIfEmpty(FunctionRootfs),
            Jail = Jail,
            JailUidBase = JailUidBase,
            JailUidCount = JailUidCount,
            JailUid = JailUid,
            JailGid = JailGid,
            JailFileSizeLimitBytes = JailFileSizeLimitBytes,
            JailOpenFilesLimit = JailOpenFilesLimit,
            JailUnshare = JailUnshare,
        };
    }

    /// <summary>A list key's entries, trimmed, without empty ones (a comma-separated string was split before binding).</summary>
    private static List<string> Trimmed(List<string> items) => [.. items.Select(i => i.Trim()).Where(i => i.Length > 0)];

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    internal static string Octal(UnixFileMode mode) => "0" + Convert.ToString((int)mode, 8);

    /// <summary>"name=role" entries (the last '=' separates them, so a name may contain '=').</summary>
    private static Dictionary<string, Auth.ApiRole> ParseClients(List<string> entries, List<string> problems)
    {
        var clients = new Dictionary<string, Auth.ApiRole>(StringComparer.Ordinal);
        foreach (var entry in entries)
        {
            int eq = entry.LastIndexOf('=');
            string name = eq > 0 ? entry[..eq].Trim() : "";
            if (name.Length == 0 || Auth.ApiRoles.Parse(entry[(eq + 1)..].Trim()) is not { } role)
                problems.Add(DaemonOptions.Bad(nameof(TlsClients), entry, "must be name=viewer, name=operator or name=admin"));
            else if (!clients.TryAdd(name, role))
                problems.Add(DaemonOptions.Bad(nameof(TlsClients), entry, $"names {name} a second time"));
        }
        return clients;
    }

    /// <summary>The value a key shows in <c>firesharp config show</c>: its text, a list's entries joined by commas, or null (unset, or an empty list).</summary>
    internal static string? Show(object? value) => value switch
    {
        null => null,
        bool b => b ? "true" : "false",
        IEnumerable<string> list => list.Any() ? string.Join(',', list) : null,
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString(),
    };
}
