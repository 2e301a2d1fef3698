using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Daemon;

/// <summary>
/// The daemon's settings. Read from configuration (in order, later wins: /etc/firesharp/config.json or
/// --config, FIRESHARP_* environment variables, --key=value arguments) by <see cref="FromConfiguration"/>;
/// keys are the property names (case-insensitive), for example <c>{"StateDir": "/srv/fs", "MaxVms": 50}</c>
/// or <c>FIRESHARP_STATEDIR=/srv/fs</c>.
/// </summary>
public sealed record DaemonOptions
{
    public const string DefaultConfigFile = "/etc/firesharp/config.json";

    /// <summary>The Unix socket the API listens on.</summary>
    public string Socket { get; init; } = "/run/firesharp/firesharp.sock";

    /// <summary>Group that may use the socket (name or gid); null keeps the daemon's group.</summary>
    public string? SocketGroup { get; init; }

    /// <summary>The socket's permission bits.</summary>
    public UnixFileMode SocketMode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    /// <summary>
    /// Who may use the Unix socket besides root and the daemon's own user (user names or uids; groups by name or
    /// gid, checked against the peer's primary and supplementary groups). Members of SocketGroup are allowed too.
    /// Checked with SO_PEERCRED on every connection; see docs/security.md.
    /// </summary>
    public IReadOnlyList<uint> SocketAllowedUids { get; init; } = [];
    public IReadOnlyList<uint> SocketAllowedGids { get; init; } = [];

    /// <summary>Also listen on TCP at host:port (mutual TLS is then required); null for none.</summary>
    public string? TcpListen { get; init; }

    /// <summary>
    /// Where Prometheus scrapes <c>/metrics</c> (plain HTTP/1.1, no authentication; nothing else is served there):
    /// "host:port", null (configured as "off", "none" or "false") for no metrics listener. Loopback by default:
    /// the series name VM ids and function names, so bind elsewhere only on a network you trust (docs/observability.md).
    /// </summary>
    public string? MetricsListen { get; init; } = DefaultMetricsListen;

    public const string DefaultMetricsListen = "127.0.0.1:9464";

    /// <summary>
    /// Where the daemon exports its spans over OTLP (docs/observability.md, Traces): an http(s) URL such as
    /// http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318/v1/traces (with <see cref="OtlpProtocol"/> http/protobuf).
    /// Null (the default): no OTLP export.
    /// </summary>
    public string? OtlpEndpoint { get; init; }

    /// <summary>OTLP's transport: grpc (the default) or http/protobuf.</summary>
    public string OtlpProtocol { get; init; } = "grpc";

    /// <summary>Also append every finished span to this file as one JSON object a line (make bench-fn reads it); null: none.</summary>
    public string? TraceFile { get; init; }

    /// <summary>PEM files for TCP: the server's certificate and key, and the CA that client certificates must chain to.</summary>
    public string? TlsCertificate { get; init; }
    public string? TlsKey { get; init; }
    public string? TlsClientCa { get; init; }

    /// <summary>A CRL (PEM or DER) signed by TlsClientCa: certificates on it are refused. Re-read when it changes.</summary>
    public string? TlsClientCrl { get; init; }

    /// <summary>
    /// The TCP allow-list: a client certificate's subject CN or DNS/URI/e-mail SAN, mapped to viewer, operator or
    /// admin. Configured as "name=role" entries (a JSON array, or one comma-separated string). Required with TcpListen.
    /// </summary>
    public IReadOnlyDictionary<string, Auth.ApiRole> TlsClients { get; init; } = new Dictionary<string, Auth.ApiRole>();

    /// <summary>Where VM records, worker sockets and worker logs live.</summary>
    public string StateDir { get; init; } = "/var/lib/firesharp";

    /// <summary>
    /// The directories under which a client (or a snapshot) may name host files: kernels, initrds, drives, snapshot
    /// directories, function code and layers (docs/security.md). Null (the default): /var/lib/firesharp. The state
    /// directory is always allowed as well (function code images and the VMs' sockets live there).
    /// </summary>
    public IReadOnlyList<string>? AllowedPathRoots { get; init; }

    /// <summary>Whether a drive may be a block device (otherwise drives must be regular files).</summary>
    public bool AllowBlockDevices { get; init; }

    /// <summary>The roots in force: <see cref="AllowedPathRoots"/> (or its default) and the state directory.</summary>
    public IReadOnlyList<string> PathRoots => [.. (AllowedPathRoots ?? [DefaultPathRoot]).Append(StateDir).Distinct(StringComparer.Ordinal)];

    /// <summary>The default of <see cref="AllowedPathRoots"/>.</summary>
    public const string DefaultPathRoot = "/var/lib/firesharp";

    /// <summary>The path policy these options configure.</summary>
    public FireSharp.Kvm.Files.PathPolicy PathPolicy() => new(PathRoots, AllowBlockDevices);

    /// <summary>The binary started as each VM's worker; null = the <c>firesharp-vmm</c> beside this executable.</summary>
    public string? WorkerBinary { get; init; }

    /// <summary>
    /// How long a new worker may take to report that its socket accepts connections. Starts slow down when
    /// many run at once on a loaded host (each is a process start); past this the create or restore fails
    /// as UNAVAILABLE. Configured in seconds (WorkerStartTimeoutSeconds).
    /// </summary>
    public TimeSpan WorkerStartTimeout { get; init; } = Workers.ProcessWorkerLauncher.DefaultStartTimeout;

    /// <summary>
    /// Each worker installs its seccomp allow-list (docs/isolation.md) before its guest first runs; a refused
    /// syscall kills it and the VM ends as EXIT_KIND_SECCOMP. On by default; off only to debug a worker.
    /// </summary>
    public bool Seccomp { get; init; } = true;

    /// <summary>
    /// Function VMs get Lambda's CPU share as their cgroup's quota: one CPU per 1,769 MB of memory, so doubling the
    /// memory doubles the CPU. False gives them their VM's default quota (vCPUs + 1), which a PVM host needs for
    /// small functions: there every guest fork is emulated kernel work, and 72 millicpus make a shell invocation
    /// take minutes.
    /// </summary>
    public bool FunctionCpuShare { get; init; } = true;

    /// <summary>
    /// Tests only: each worker, once its filter is in, makes this forbidden call ("execve" or "socket", an AF_INET
    /// socket) when it receives SIGUSR2, so a test can see the filter kill it. Only the host's configuration can set
    /// it; no guest or API client can. Needs <see cref="Seccomp"/>.
    /// </summary>
    public string? SeccompTestTrigger { get; init; }

    /// <summary>At most this many VMs (of any state) exist at once.</summary>
    public int MaxVms { get; init; } = 256;

    /// <summary>The memory of VMs with a machine (created, running, paused) may add up to this share of the host's memory.</summary>
    public double MemoryOvercommit { get; init; } = 1.0;

    /// <summary>StopVm's grace period when the request gives none.</summary>
    public TimeSpan DefaultStopGrace { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Stop every VM when the daemon stops (otherwise they keep running and a restarted daemon adopts them).</summary>
    public bool StopVmsOnShutdown { get; init; }

    /// <summary>Minimum log level: Verbose, Debug, Information, Warning, Error, Fatal.</summary>
    public string LogLevel { get; init; } = "Information";

    /// <summary>Also write the log as compact JSON (one event a line) to this file.</summary>
    public string? LogJsonFile { get; init; }

    /// <summary>Worker log lines per second per VM that the daemon logs again (bursts of twice that); the rest are counted as dropped.</summary>
    public int WorkerLogLinesPerSecond { get; init; } = 100;

    /// <summary>A VM's worker.log is rotated to worker.log.1 past this size (0: never).</summary>
    public long WorkerLogMaxBytes { get; init; } = 4 << 20;

    /// <summary>A VM's console.log is rotated to console.log.1 past this size (0: the console is not kept).</summary>
    public long ConsoleLogMaxBytes { get; init; } = 4 << 20;

    /// <summary>The three settings above.</summary>
    public Logs.LogLimits LogLimits => new() { LinesPerSecond = WorkerLogLinesPerSecond, WorkerLogMaxBytes = WorkerLogMaxBytes, ConsoleLogMaxBytes = ConsoleLogMaxBytes };

    /// <summary>Per-VM cgroups: Auto (on when the daemon is root and the cgroup file system is writable), Required or Off. See docs/isolation.md.</summary>
    public Isolation.CgroupMode Cgroups { get; init; } = Isolation.CgroupMode.Auto;

    /// <summary>Where the cgroup file systems are mounted: a cgroup2 mount (v2) or a directory of v1 controller mounts.</summary>
    public string CgroupRoot { get; init; } = "/sys/fs/cgroup";

    /// <summary>The daemon's parent cgroup, relative to the root (to each controller's mount on v1); each VM's cgroup is &lt;parent&gt;/&lt;id&gt;.</summary>
    public string CgroupParent { get; init; } = "firesharp";

    /// <summary>
    /// A VM's memory limit is its guest memory plus this, for the worker itself: its code and heap, thread stacks,
    /// device buffers and the kernel's KVM and page-table memory charged to it. docs/isolation.md gives the measurements.
    /// </summary>
    public long VmmMemoryAllowanceMib { get; init; } = 64;

    /// <summary>A VM's pids limit is its vCPU count plus this (the worker's other threads: runtime, devices, RPC).</summary>
    public int VmPidsAllowance { get; init; } = 64;

    /// <summary>Each VM's relative I/O weight (v2 io.weight, v1 blkio.weight, where the kernel offers it); null leaves the default.</summary>
    public int? CgroupIoWeight { get; init; }

    /// <summary>Functions: concurrent executions allowed across all functions (Lambda's account limit).</summary>
    public int FunctionConcurrencyLimit { get; init; } = 1000;

    /// <summary>Functions: the kernel and root filesystem a function runs on when its spec names none (null = none: specs must name them).</summary>
    public string? FunctionKernel { get; init; }
    public string? FunctionRootfs { get; init; }

    /// <summary>
    /// Jail every VM's worker (docs/isolation.md): its own uid/gid, namespaces, a pivot_root into
    /// <c>&lt;StateDir&gt;/jail/&lt;id&gt;/root</c>, no capabilities. Null (the default): on when the daemon runs as root.
    /// </summary>
    public bool? Jail { get; init; }

    /// <summary>The uids (and gids) handed to jailed VMs, one each: JailUidBase .. JailUidBase + JailUidCount - 1.</summary>
    public uint JailUidBase { get; init; } = 1_500_000_000;
    public uint JailUidCount { get; init; } = 1_000_000;

    /// <summary>One fixed uid/gid for every jailed VM instead of the range (VMs can then signal each other's workers).</summary>
    public uint? JailUid { get; init; }
    public uint? JailGid { get; init; }

    /// <summary>A jailed worker's RLIMIT_FSIZE; 0 (the default): its guest memory plus 64 MiB, or its largest drive if larger.</summary>
    public ulong JailFileSizeLimitBytes { get; init; }

    /// <summary>A jailed worker's RLIMIT_NOFILE.</summary>
    public ulong JailOpenFilesLimit { get; init; } = 4096;

    /// <summary>util-linux unshare(1), used to make a jailed worker's namespaces.</summary>
    public string JailUnshare { get; init; } = "/usr/bin/unshare";

    /// <summary>Whether workers are jailed (<see cref="Jail"/>, or running as root when it is not set).</summary>
    public bool JailEnabled => Jail ?? (!OperatingSystem.IsWindows() && Environment.IsPrivilegedProcess);

    /// <summary>The jails' directories: <c>&lt;StateDir&gt;/jail/&lt;id&gt;/</c> holds root/, outbox/ and plan.pb.</summary>
    public string JailsDir => Path.Combine(StateDir, "jail");

    public string JailDir(string id) => Path.Combine(JailsDir, id);

    /// <summary>The VMs' sockets directories: <c>&lt;StateDir&gt;/run/&lt;id&gt;/</c> (the worker's and the vsock socket), the one place a jailed worker may create files.</summary>
    public string RunsDir => Path.Combine(StateDir, "run");

    public string RunDir(string id) => Path.Combine(RunsDir, id);

    /// <summary>Function records, packed code and snapshots.</summary>
    public string FunctionsDir => Path.Combine(StateDir, "functions");

    /// <summary>The worker's socket for a VM.</summary>
    public string WorkerSocket(string id) => Path.Combine(RunDir(id), "worker.sock");

    public string VmsDir => Path.Combine(StateDir, "vms");

    /// <summary>The HMAC keys that sign and verify snapshots (0700; one 0600 file per key; the newest signs).</summary>
    public string SnapshotKeysDir => Path.Combine(StateDir, "snapshot-keys");

    /// <summary>
    /// A key file or a directory of <c>*.key</c> files to sign and verify snapshots with instead of
    /// <see cref="SnapshotKeysDir"/> (which is then neither made nor read): <c>firesharp run --jail --restore
    /// --snapshot-key</c> uses it for the daemon core it runs on a temporary state directory.
    /// </summary>
    public string? SnapshotKeysPath { get; init; }

    public string VmDir(string id) => Path.Combine(VmsDir, id);

    /// <summary>The longest VM id whose worker socket path still fits in sun_path (108 bytes with the NUL).</summary>
    public int MaxIdLength => Math.Min(63, 107 - System.Text.Encoding.UTF8.GetByteCount(Path.Combine(RunsDir, "x", "worker.sock")) + 1);

    /// <summary>
    /// Reads the options from configuration (<see cref="Configuration.DaemonConfiguration"/>: unknown keys, types,
    /// ranges and the rules below); an <see cref="ArgumentException"/> lists every problem, one a line, each naming its key.
    /// </summary>
    public static DaemonOptions FromConfiguration(IConfiguration c) => Configuration.DaemonConfiguration.LoadOrThrow(c);

    /// <summary>Checks the options that do not depend on the file system; throws for the first problem.</summary>
    public void Validate()
    {
        if (Problems() is [var first, ..]) throw new ArgumentException("configuration " + first);
    }

    /// <summary>Every problem of these options (those that do not depend on the file system), one line each, naming its key.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!Path.IsPathFullyQualified(Socket)) problems.Add(Bad(nameof(Socket), Socket, "must be an absolute path"));
        if (!Path.IsPathFullyQualified(StateDir)) problems.Add(Bad(nameof(StateDir), StateDir, "must be an absolute path"));
        foreach (var root in AllowedPathRoots ?? [])
            if (FireSharp.Kvm.Files.PathPolicy.Normalize(root, out string? why) is null) problems.Add(Bad(nameof(AllowedPathRoots), root, why!));
        if (MaxIdLength < 16) problems.Add(Bad(nameof(StateDir), StateDir, "is too long: worker socket paths under it would not fit in 108 bytes"));
        if (WorkerStartTimeout <= TimeSpan.Zero)
            problems.Add(Bad("WorkerStartTimeoutSeconds", WorkerStartTimeout.TotalSeconds.ToString(CultureInfo.InvariantCulture), "must be at least 1"));
        if (MaxVms < 1) problems.Add(Bad(nameof(MaxVms), MaxVms.ToString(CultureInfo.InvariantCulture), "must be at least 1"));
        if (FunctionConcurrencyLimit < 1) problems.Add(Bad(nameof(FunctionConcurrencyLimit), FunctionConcurrencyLimit.ToString(CultureInfo.InvariantCulture), "must be at least 1"));
        if (FunctionKernel is not null && !Path.IsPathFullyQualified(FunctionKernel)) problems.Add(Bad(nameof(FunctionKernel), FunctionKernel, "must be an absolute path"));
        if (FunctionRootfs is not null && !Path.IsPathFullyQualified(FunctionRootfs)) problems.Add(Bad(nameof(FunctionRootfs), FunctionRootfs, "must be an absolute path"));
        if (MetricsListen is not null)
        {
            if (!Hosting.DaemonHost.TryParseEndpoint(MetricsListen, out var metrics))
                problems.Add(Bad(nameof(MetricsListen), MetricsListen, "must be host:port (such as 127.0.0.1:9464) or off"));
            else if (TcpListen is not null && Hosting.DaemonHost.TryParseEndpoint(TcpListen, out var api) && api.Port == metrics.Port)
                problems.Add(Bad(nameof(MetricsListen), MetricsListen, "must not use TcpListen's port: the API and the metrics never share a listener"));
        }
        if (OtlpEndpoint is not null && !(Uri.TryCreate(OtlpEndpoint, UriKind.Absolute, out var otlp) && otlp.Scheme is "http" or "https"))
            problems.Add(Bad(nameof(OtlpEndpoint), OtlpEndpoint, "must be an http or https URL (such as http://127.0.0.1:4317) or off"));
        if (OtlpProtocol is not ("grpc" or "http/protobuf")) problems.Add(Bad(nameof(OtlpProtocol), OtlpProtocol, "must be grpc or http/protobuf"));
        if (TraceFile is not null && !Path.IsPathFullyQualified(TraceFile)) problems.Add(Bad(nameof(TraceFile), TraceFile, "must be an absolute path"));
        if (TcpListen is not null && (TlsCertificate is null || TlsKey is null || TlsClientCa is null))
            problems.Add(Bad(nameof(TcpListen), TcpListen, "TCP needs TlsCertificate, TlsKey and TlsClientCa (mutual TLS is mandatory)"));
        if (TcpListen is not null && TlsClients.Count == 0)
            problems.Add(Bad(nameof(TcpListen), TcpListen, "TCP needs TlsClients, the allow-list of client names and their roles (name=viewer|operator|admin)"));
        foreach (var path in (ReadOnlySpan<(string Key, string? Value)>)[(nameof(TlsCertificate), TlsCertificate), (nameof(TlsKey), TlsKey), (nameof(TlsClientCa), TlsClientCa), (nameof(TlsClientCrl), TlsClientCrl)])
            if (path.Value is not null && !Path.IsPathFullyQualified(path.Value)) problems.Add(Bad(path.Key, path.Value, "must be an absolute path"));
        if (TlsClientCrl is not null && TlsClientCa is null) problems.Add(Bad(nameof(TlsClientCrl), TlsClientCrl, "needs TlsClientCa (the CRL's issuer)"));
        if (SeccompTestTrigger is not null and not ("execve" or "socket"))
            problems.Add(Bad(nameof(SeccompTestTrigger), SeccompTestTrigger, "must be execve or socket (tests only)"));
        if (SeccompTestTrigger is not null && !Seccomp) problems.Add(Bad(nameof(SeccompTestTrigger), SeccompTestTrigger, "needs Seccomp=true"));
        if (JailUidCount < 1) problems.Add(Bad(nameof(JailUidCount), JailUidCount.ToString(CultureInfo.InvariantCulture), "must be at least 1"));
        if (JailUidBase == 0 || (ulong)JailUidBase + JailUidCount > uint.MaxValue)
            problems.Add(Bad(nameof(JailUidBase), JailUidBase.ToString(CultureInfo.InvariantCulture), "must be above 0, with JailUidBase + JailUidCount below 2^32 - 1"));
        if (JailUid == 0 || JailGid == 0) problems.Add(Bad(JailUid == 0 ? nameof(JailUid) : nameof(JailGid), "0", "must not be root"));
        if ((JailUid is null) != (JailGid is null)) problems.Add(Bad(nameof(JailUid), JailUid?.ToString(CultureInfo.InvariantCulture) ?? "", "JailUid and JailGid go together"));
        if (JailOpenFilesLimit < 64) problems.Add(Bad(nameof(JailOpenFilesLimit), JailOpenFilesLimit.ToString(CultureInfo.InvariantCulture), "must be at least 64"));
        if (!Path.IsPathFullyQualified(JailUnshare)) problems.Add(Bad(nameof(JailUnshare), JailUnshare, "must be an absolute path"));
        if (!Path.IsPathFullyQualified(CgroupRoot)) problems.Add(Bad(nameof(CgroupRoot), CgroupRoot, "must be an absolute path"));
        if (!IsCgroupPath(CgroupParent))
            problems.Add(Bad(nameof(CgroupParent), CgroupParent, "must be a relative path of names made of letters, digits, '_', '.' and '-' (such as firesharp or machine.slice/firesharp)"));
        if (VmmMemoryAllowanceMib is < 16 or > 64 * 1024)
            problems.Add(Bad(nameof(VmmMemoryAllowanceMib), VmmMemoryAllowanceMib.ToString(CultureInfo.InvariantCulture), "must be 16 to 65536 (a worker needs about 10 MiB of its own)"));
        if (VmPidsAllowance is < 16 or > 1 << 20)
            problems.Add(Bad(nameof(VmPidsAllowance), VmPidsAllowance.ToString(CultureInfo.InvariantCulture), "must be 16 to 1048576 (an idle worker already has about 12 threads)"));
        if (CgroupIoWeight is < 1 or > 10000)
            problems.Add(Bad(nameof(CgroupIoWeight), CgroupIoWeight.Value.ToString(CultureInfo.InvariantCulture), "must be 1 to 10000"));
        if (WorkerLogLinesPerSecond < 1) problems.Add(Bad(nameof(WorkerLogLinesPerSecond), WorkerLogLinesPerSecond.ToString(CultureInfo.InvariantCulture), "must be at least 1"));
        if (WorkerLogMaxBytes < 0) problems.Add(Bad(nameof(WorkerLogMaxBytes), WorkerLogMaxBytes.ToString(CultureInfo.InvariantCulture), "must be 0 (never rotate) or more"));
        if (ConsoleLogMaxBytes < 0) problems.Add(Bad(nameof(ConsoleLogMaxBytes), ConsoleLogMaxBytes.ToString(CultureInfo.InvariantCulture), "must be 0 (keep no console file) or more"));
        if (!Hosting.LogLevels.TryParse(LogLevel, out _))
            problems.Add(Bad(nameof(LogLevel), LogLevel, "must be one of " + Hosting.LogLevels.Names));
        return problems;
    }

    private static bool IsCgroupPath(string path) =>
        path.Length is > 0 and <= 255 && path.Split('/').All(part => part.Length > 0 && part is not ("." or "..")
            && part.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '.' or '-'));

    /// <summary>One problem line: "MaxVms='0' must be at least 1".</summary>
    internal static string Bad(string key, string value, string why = "is not valid") => $"{key}='{value}' {why}";
}
