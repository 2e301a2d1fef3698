using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using FireSharp.Agent.Guest;
using FireSharp.Agent.Interop;
using FireSharp.Agent.Processes;
using FireSharp.Agent.Server;
using FireSharp.Agent.Transport;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Tmds.Linux;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace FireSharp.Agent;

/// <summary>
/// firesharp-agent: the FireSharp guest agent. In the guest it serves the agent protocol
/// (src/Proto/agent.proto) on vsock port 52 and reports readiness to the host on vsock CID 2
/// port 53. It runs either as PID 1 (<c>rdinit=/usr/bin/firesharp-agent</c>) or from the
/// image's /init (<c>firesharp.agent=1</c>, /etc/firesharp/start.d/50-firesharp-agent).
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        long mainEntered = Stopwatch.GetTimestamp();
        var options = AgentOptions.Parse(args, out var usageError);
        if (usageError is not null || options.ShowHelp)
        {
            Log.Info(usageError ?? "");
            await Console.Error.WriteAsync(AgentOptions.Usage + "\n").ConfigureAwait(false);
            return usageError is null ? 0 : 2;
        }
        if (options.ShowVersion)
        {
            await Console.Out.WriteLineAsync($"firesharp-agent {AgentVersion} (protocol {AgentProtocol.Version})").ConfigureAwait(false);
            return 0;
        }
        Log.Verbose = options.Verbose;
        bool pid1 = Environment.ProcessId == 1;
        try
        {
            return await RunAsync(options, pid1, mainEntered).ConfigureAwait(false);
        }
        catch (Exception e) when (pid1)
        {
            // PID 1 must not exit (the kernel panics): end the machine cleanly instead.
            Log.Error("fatal: " + e);
            Halt();
            return 1;
        }
    }

    public static string AgentVersion { get; } =
        typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0";

    private static async Task<int> RunAsync(AgentOptions options, bool pid1, long mainEntered)
    {
        EnsureStandardDescriptors();
        IGuestSystem system = options.FakeSystem ? new FakeGuestSystem() : new LinuxGuestSystem();
        var reaper = new ChildReaper(Log.Error);
        var setup = new GuestSetup(system, reaper);
        if (system.IsReal) setup.MountBaseFileSystems();
        if (!pid1) BecomeSubreaper();

        string cmdline = ReadCmdline(options);
        var cmdlineErrors = new List<string>();
        var config = AgentBootConfig.Parse(cmdline, cmdlineErrors);
        foreach (var e in cmdlineErrors) { setup.Warnings.Add(e); Log.Error(e); }

        if (system.IsReal)
        {
            setup.SetHostname(config.Hostname);
            await setup.ConfigureNetworkAsync(config).ConfigureAwait(false);
            await setup.MountExtraDrivesAsync(config.Mounts).ConfigureAwait(false);
        }

        var listenAt = options.Listen ?? new VsockEndpoint(Vsock.VMADDR_CID_ANY, config.Port);
        AgentEndpoint? readyAt = options.NoReady ? null
            : options.Ready ?? (config.ReadyPort == 0 ? null : new VsockEndpoint(AgentProtocol.HostCid, config.ReadyPort));

        IAgentListener listener;
        try
        {
            listener = IAgentListener.Create(listenAt);
        }
        catch (IOException e)
        {
            Log.Error(e.Message);
            if (pid1) { Halt(); }
            return 1;
        }

        var info = new AgentInfo
        {
            Version = AgentVersion,
            ProtocolVersion = AgentProtocol.Version,
            KernelRelease = ReadTrimmed("/proc/sys/kernel/osrelease"),
            Pid1 = pid1,
            MaxFrameBytes = AgentProtocol.MaxFrameBytes,
            MaxFileBytes = AgentProtocol.MaxFileBytes,
        };
        var context = new AgentContext
        {
            System = system,
            Reaper = reaper,
            Setup = setup,
            Info = info,
            BaseEnvironment = BaseEnvironment(),
        };
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnStopSignal(c, context, pid1, LibC.SIGTERM));
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnStopSignal(c, context, pid1, LibC.SIGINT));

        var server = new AgentServer(listener, context);
        var serving = server.RunAsync(context.StopAccepting.Token);
        ulong startupUs = StartupMicros(mainEntered, pid1);
        Log.Info($"listening on {listener.Description} ({startupUs / 1000.0:F1} ms after {(pid1 ? "Main, PID 1" : "start")}, uptime {Native.BootTimeMicros() / 1000} ms)");

        if (readyAt is not null)
        {
            var ready = new Ready
            {
                Agent = context.CurrentInfo(),
                Port = listenAt is VsockEndpoint v ? v.Port : 0,
                UptimeUs = Native.BootTimeMicros(),
                StartupUs = startupUs,
            };
            ready.Mounts.AddRange(setup.ExtraMounts);
            ready.Warnings.AddRange(setup.Warnings);
            _ = ReadyReporter.ReportAsync(readyAt, ready, TimeSpan.FromSeconds(30), context.StopAccepting.Token);
        }

        await serving.ConfigureAwait(false);
        listener.Dispose();
        await context.Stopped.ConfigureAwait(false);
        if (pid1)
        {
            // Shutdown powers off; reaching here means it failed. Never return as PID 1.
            Halt();
        }
        return 0;
    }

    private static void OnStopSignal(PosixSignalContext signal, AgentContext context, bool pid1, int signo)
    {
        signal.Cancel = true; // keep running: forward, and (unless PID 1) stop in order
        if (pid1)
        {
            context.ForwardSignal(signo);
            return;
        }
        Log.Info($"signal {signo}: stopping");
        _ = Task.Run(() => context.StopAsync(signo));
    }

    /// <summary>As PID 1 with nothing left to do: power off (the kernel panics if init exits).</summary>
    private static void Halt()
    {
        LibC.sync();
        Log.Error("powering off");
        Native.reboot(Native.RB_POWER_OFF);
        Thread.Sleep(Timeout.Infinite);
    }

    /// <summary>Adopt orphans of the commands the agent runs, so the reaper can wait for them.</summary>
    private static void BecomeSubreaper() =>
        LibC.syscall(Native.SYS_prctl, Native.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    /// <summary>
    /// Makes sure fds 0-2 are open (on /dev/null), so no socket the agent creates becomes a
    /// command's stdin/stdout/stderr by accident (posix_spawn's dup2 of fd N onto N keeps CLOEXEC).
    /// </summary>
    private static unsafe void EnsureStandardDescriptors()
    {
        for (int fd = 0; fd <= 2; fd++)
        {
            int copy = LibC.dup(fd);
            if (copy >= 0) { _ = LibC.close(copy); continue; } // a probe: fd is open
            byte* devNull = Native.AllocUtf8("/dev/null");
            try
            {
                // fd is the lowest free descriptor (0-2 are filled in order), so open takes it.
                if (LibC.open(devNull, LibC.O_RDWR, 0) < 0)
                    Log.Error($"cannot open /dev/null as fd {fd}: {Native.ErrnoText(LibC.errno)}; a command's stdio may be closed");
            }
            finally { NativeMemory.Free(devNull); }
        }
    }

    private static string ReadCmdline(AgentOptions options)
    {
        string? path = options.CmdlineFile ?? (options.FakeSystem ? null : "/proc/cmdline");
        if (path is null) return "";
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Error($"{path}: {e.Message}");
            return "";
        }
    }

    private static string ReadTrimmed(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return ""; }
    }

    private static Dictionary<string, string> BaseEnvironment()
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
            env[(string)e.Key] = (string?)e.Value ?? "";
        env.TryAdd("PATH", ProcessSpawner.DefaultPath);
        env.TryAdd("HOME", "/root");
        return env;
    }

    /// <summary>
    /// From the process's start (its start time in /proc/self/stat, which includes the runtime's
    /// own start-up) to now, in microseconds. As PID 1, or if /proc cannot tell, from Main: PID 1's
    /// start time is when the kernel made the init thread, long before it exec'd the agent.
    /// </summary>
    private static ulong StartupMicros(long mainEntered, bool pid1) =>
        (!pid1 ? ProcessAgeMicros() : null) ?? (ulong)Stopwatch.GetElapsedTime(mainEntered).Ticks / 10;

    private static ulong? ProcessAgeMicros()
    {
        try
        {
            var stat = File.ReadAllText("/proc/self/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            ulong startTicks = ulong.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture); // field 22: starttime
            const ulong ClockTicksPerSecond = 100; // USER_HZ on x86_64
            ulong now = Native.BootTimeMicros(), start = startTicks * (1_000_000 / ClockTicksPerSecond);
            return now > start ? now - start : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }
}
