using System.CommandLine;
using FireSharp.Daemon;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp serve</c>: the daemon. Settings (see <see cref="DaemonOptions"/>) come from the JSON config
/// file, then FIRESHARP_* environment variables, then <c>--Key=value</c> arguments, later ones winning.
/// Exit codes (<see cref="ExitCodes"/>): 0 after a clean stop (SIGTERM/SIGINT), 2 invalid configuration, 5 KVM
/// unusable, 1 start-up failed otherwise (socket cannot be bound, ...).
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = $"JSON config file (default {DaemonOptions.DefaultConfigFile}, if it exists)" };
        var command = new Command("serve", "run the FireSharp daemon (gRPC VmService on a Unix socket)")
        {
            config,
        };
        command.Description += "\n\nSettings, as --Key=value, FIRESHARP_KEY=value or keys of the JSON config: Socket, SocketGroup, SocketMode, " +
            "SocketAllowedUsers, SocketAllowedGroups, StateDir, TcpListen, TlsCertificate, TlsKey, TlsClientCa, TlsClientCrl, " +
            "TlsClients (name=viewer|operator|admin,...), WorkerBinary, MaxVms, MemoryOvercommit, DefaultStopGraceSeconds, " +
            "StopVmsOnShutdown, LogLevel, LogJsonFile, OtlpEndpoint, OtlpProtocol, TraceFile, Jail, Seccomp, Cgroups, FunctionCpuShare (see packaging/README.md, docs/security.md and docs/isolation.md).";
        command.TreatUnmatchedTokensAsErrors = false;
        // Synchronous on purpose: the host handles SIGTERM/SIGINT itself (graceful stop), and System.CommandLine's
        // own Ctrl-C handling would end the process after a short timeout.
        command.SetAction(parse => Run(parse.GetValue(config), [.. parse.UnmatchedTokens]));
        return command;
    }

    private static int Run(string? configFile, string[] settings)
    {
        DaemonOptions options;
        try
        {
            var loaded = Daemon.Configuration.DaemonConfiguration.Load(Daemon.Configuration.DaemonConfiguration.Build(configFile, settings));
            if (!loaded.Ok)
            {
                foreach (var problem in loaded.Problems) Console.Error.WriteLine($"firesharp serve: invalid configuration: {problem}");
                return 2;
            }
            options = loaded.Options!;
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or IOException)
        {
            Console.Error.WriteLine($"firesharp serve: invalid configuration: {e.Message}");
            return ExitCodes.Usage;
        }
        if (FireSharp.Kvm.KvmSystem.Probe(out string kvmMessage) is var reason && reason != FireSharp.Kvm.KvmUnavailableReason.None)
            return CliErrors.Report(Console.Error, ExitCodes.NoKvm, $"KVM is not usable ({reason}): {kvmMessage}", "firesharp serve needs a usable /dev/kvm (see the README on PVM hosts)");

        try
        {
            var app = Daemon.Hosting.DaemonHost.Build(options);
            try
            {
                app.Run();
            }
            finally
            {
                ((IAsyncDisposable)app).DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            return 0;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Console.Error.WriteLine($"firesharp serve: {e.Message}");
            return ExitCodes.Failed;
        }
    }
}
