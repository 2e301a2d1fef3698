using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;
using FireSharp.Logging;
using FireSharp.Worker.Protocol;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Worker;

/// <summary>
/// <c>firesharp-vmm</c>: one VM's worker process, started by the daemon. It listens on the socket it is
/// given and does nothing else until the daemon sends requests (see worker.proto). It takes only the paths
/// it is given, so a jailer can start it inside a chroot with those paths. SIGTERM/SIGINT stop the guest
/// and end the process. With <c>--log</c>, it writes <see cref="ProcessWorkerLauncher.ReadyLine"/> on its original stdout
/// (the daemon's pipe) once the socket accepts connections, and closes it.
/// </summary>
/// <remarks>
/// The four options are parsed by <see cref="WorkerArgs"/> rather than System.CommandLine: this process runs once
/// per VM, and a parser library's code is resident memory in every one of them (make bench-worker-size).
/// </remarks>
public static class Program
{
    public static int Main(string[] args)
    {
        var parsed = WorkerArgs.Parse(args);
        if (parsed.Error is { } error)
        {
            Console.Error.WriteLine($"firesharp-vmm: {error}");
            Console.Error.WriteLine(WorkerArgs.Usage);
            return 1;
        }
        if (parsed.Help)
        {
            Console.WriteLine(WorkerArgs.Usage);
            return 0;
        }
        if (parsed.Jail is not null) return Jail(parsed);
        if (parsed.Jailed is not null)
        {
            SafeFileHandle? ready;
            try
            {
                ready = Jailer.Enter(parsed);
            }
            catch (Exception e) when (e is JailSetupException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"firesharp-vmm: cannot enter the jail: {e.Message}");
                return 1;
            }
            return Run(parsed, ready);
        }
        // An unjailed worker verifies the snapshots it restores (HMAC-SHA256): OpenSSL's one-time set-up makes calls its
        // seccomp filter forbids, so it happens now. A jailed worker never verifies (its jailer did) and could not load
        // OpenSSL after its pivot_root anyway.
        if (parsed.Seccomp) FireSharp.Snapshot.SnapshotMac.WarmUp();
        // A session of our own: the terminal's Ctrl-C and the daemon's process group do not reach the VM.
        ProcInfo.NewSession();
        var readyPipe = parsed.Log is not null ? ProcInfo.DuplicateStdout() : null; // kept past the redirect
        if (parsed.Log is not null) ProcInfo.RedirectStdio(parsed.Log);
        return Run(parsed, readyPipe);
    }

    /// <summary>Stage 1 of the jail (see <see cref="Jailer"/>): only returns when it fails.</summary>
    private static int Jail(WorkerArgs parsed)
    {
        try
        {
            return Jailer.Prepare(parsed);
        }
        catch (FireSharp.Snapshot.SnapshotException e)
        {
            // Still on the ready pipe (stdout): the daemon turns this into the API's typed snapshot error.
            Console.Error.WriteLine($"firesharp-vmm: the snapshot to restore is refused: {e.Message}");
            Console.Out.WriteLine(FireSharp.Worker.Protocol.WorkerStartup.SnapshotRefused(e.Reason.ToString(), e.Message));
            Console.Out.Flush();
            return 1;
        }
        catch (Exception e) when (e is JailSetupException or IOException or UnauthorizedAccessException or Google.Protobuf.InvalidProtocolBufferException)
        {
            Console.Error.WriteLine($"firesharp-vmm: cannot set up the jail: {e.Message}");
            return 1;
        }
    }

    private static int Run(WorkerArgs args, SafeFileHandle? readyPipe)
    {
        string socketPath = args.Socket!;
        using var ready = readyPipe;
        // JSON lines on stderr (the VM's worker.log): the daemon tails them and logs them again with the VM's id.
        var logger = new JsonLineLogger(args.Level, "FireSharp.Worker");
        using var stop = new CancellationTokenSource();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        WorkerMachine.OwnsProcess = true;
        var worker = new VmWorker(socketPath, logger) { Confine = args.Seccomp ? () => ConfineWorker.Install(logger, args.SeccompTestTrigger) : null };
        try
        {
            worker.RunAsync(stop.Token, () =>
            {
                if (ready is not null) ProcInfo.WriteLineAndClose(ready, WorkerStartup.ReadyLine);
            }).GetAwaiter().GetResult();
            return 0;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            WorkerLog.CannotServe(logger, socketPath, e.Message);
            return 1;
        }
    }
}

/// <summary>
/// The worker's command line: <c>--socket PATH [--log PATH] [--id ID] [--log-level LEVEL] [--seccomp [--seccomp-test-trigger KIND]]</c>, or <c>--help</c>;
/// with <c>--jail PLAN</c> the jail's first stage, with <c>--jailed PLAN [--ready-fd N] [--fds A,B,..] [--tap-errors LINES]</c> its second.
/// </summary>
public sealed record WorkerArgs
{
    public const string Usage =
        "usage: firesharp-vmm --socket PATH [--log PATH] [--id ID] [--log-level LEVEL] [--seccomp [--seccomp-test-trigger KIND]]\n" +
        "  one VM's worker process (started by `firesharp serve`)\n" +
        "  --socket PATH       Unix socket to create and serve the daemon on (required)\n" +
        "  --log PATH          append stdout/stderr to this file (stdin becomes /dev/null)\n" +
        "  --id ID             the VM's id, for logs\n" +
        "  --log-level LEVEL   Trace, Debug, Information (default), Warning, Error, Critical or None\n" +
        "  --seccomp           install the seccomp allow-list before the guest first runs (docs/isolation.md)\n" +
        "  --seccomp-test-trigger KIND\n" +
        "                      tests only: on SIGUSR2 after the filter is in, call execve or socket(AF_INET) (KIND)\n" +
        "  --jail PLAN         run jailed as the daemon's JailPlan file says (as root; see docs/isolation.md)";

    /// <summary>The forbidden calls <c>--seccomp-test-trigger</c> can make.</summary>
    public static readonly IReadOnlyList<string> TestTriggers = ["execve", "socket"];

    public string? Socket { get; init; }
    public string? Log { get; init; }
    public string? Id { get; init; }
    public LogLevel Level { get; init; } = LogLevel.Information;
    public bool Help { get; init; }
    /// <summary>Install the seccomp filter (<see cref="WorkerSeccomp"/>) before the guest first runs.</summary>
    public bool Seccomp { get; init; }
    /// <summary>Tests only: the forbidden call made on SIGUSR2 once the filter is in ("execve" or "socket").</summary>
    public string? SeccompTestTrigger { get; init; }
    /// <summary>The jail plan for stage 1 (<c>--jail</c>) or stage 2 (<c>--jailed</c>, given by stage 1).</summary>
    public string? Jail { get; init; }
    public string? Jailed { get; init; }
    /// <summary>Stage 2: the ready pipe and the pre-opened files' fds (-1: not opened), inherited from stage 1.</summary>
    public int? ReadyFd { get; init; }
    public IReadOnlyList<int> Fds { get; init; } = [];
    /// <summary>Stage 2: why the jailer could not open some of the VM's taps (their fds are -1).</summary>
    public IReadOnlyList<TapError> TapErrors { get; init; } = [];
    /// <summary>What is wrong with the command line, or null.</summary>
    public string? Error { get; init; }

    /// <summary>Options as <c>--name value</c> or <c>--name=value</c>; each at most once.</summary>
    public static WorkerArgs Parse(IReadOnlyList<string> args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        bool seccomp = false;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (a is "--help" or "-h" or "-?") return new WorkerArgs { Help = true };
            if (a == "--seccomp")
            {
                if (seccomp) return new WorkerArgs { Error = "--seccomp given twice" };
                seccomp = true;
                continue;
            }
            int eq = a.IndexOf('=', StringComparison.Ordinal);
            string name = eq > 0 ? a[..eq] : a;
            if (name is not ("--socket" or "--log" or "--id" or "--log-level" or "--seccomp-test-trigger" or "--jail" or "--jailed" or "--ready-fd" or "--fds" or "--tap-errors")) return new WorkerArgs { Error = $"unknown argument '{a}'" };
            string? value = eq > 0 ? a[(eq + 1)..] : i + 1 < args.Count ? args[++i] : null;
            if (value is null) return new WorkerArgs { Error = $"{name} needs a value" };
            if (!values.TryAdd(name, value)) return new WorkerArgs { Error = $"{name} given twice" };
        }
        if (!values.TryGetValue("--socket", out var socket) || socket.Length == 0) return new WorkerArgs { Error = "--socket is required" };
        var level = LogLevel.Information;
        if (values.TryGetValue("--log-level", out var l) && (!Enum.TryParse(l, ignoreCase: true, out level) || !Enum.IsDefined(level)))
            return new WorkerArgs { Error = $"--log-level: '{l}' is not a log level" };
        string? trigger = values.GetValueOrDefault("--seccomp-test-trigger");
        if (trigger is not null && !TestTriggers.Contains(trigger))
            return new WorkerArgs { Error = $"--seccomp-test-trigger: '{trigger}' is not one of {string.Join(", ", TestTriggers)}" };
        if (trigger is not null && !seccomp) return new WorkerArgs { Error = "--seccomp-test-trigger needs --seccomp" };
        int? readyFd = null;
        if (values.TryGetValue("--ready-fd", out var r))
        {
            if (!int.TryParse(r, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd)) return new WorkerArgs { Error = $"--ready-fd: '{r}' is not an fd" };
            readyFd = fd;
        }
        var fds = new List<int>();
        if (values.TryGetValue("--fds", out var list))
        {
            foreach (var f in list.Split(','))
            {
                if (!int.TryParse(f, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out int fd) || fd < -1)
                    return new WorkerArgs { Error = $"--fds: '{f}' is not an fd" };
                fds.Add(fd);
            }
        }
        List<TapError> tapErrors = [];
        if (values.TryGetValue("--tap-errors", out var te))
        {
            if (TapError.Parse(te) is not { } parsed) return new WorkerArgs { Error = "--tap-errors: not INDEX:REASON:MESSAGE lines" };
            tapErrors = parsed;
        }
        string? jail = values.GetValueOrDefault("--jail"), jailed = values.GetValueOrDefault("--jailed");
        if (jail is not null && jailed is not null) return new WorkerArgs { Error = "--jail and --jailed exclude each other" };
        if (jailed is null && (readyFd is not null || fds.Count > 0 || tapErrors.Count > 0)) return new WorkerArgs { Error = "--ready-fd, --fds and --tap-errors go with --jailed" };
        return new WorkerArgs
        {
            Socket = socket, Log = values.GetValueOrDefault("--log"), Id = values.GetValueOrDefault("--id"), Level = level,
            Seccomp = seccomp, SeccompTestTrigger = trigger,
            Jail = jail, Jailed = jailed, ReadyFd = readyFd, Fds = fds, TapErrors = tapErrors,
        };
    }
}
