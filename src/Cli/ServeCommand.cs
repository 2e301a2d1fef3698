using System.CommandLine;
using FireSharp.Daemon;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp serve</c>: the daemon. Settings (see <see cref="DaemonOptions"/>) come from the JSON config
/// file, then FIRESHARP_* environment variables, then <c>--Key=value</c> arguments, later ones winning.
/// Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 invalid configuration, 1 start-up failed (KVM
/// unusable, socket cannot be bound, ...).
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
            if (configFile is not null && !File.Exists(configFile))
                throw new ArgumentException($"config file {configFile} does not exist");
            var configuration = new ConfigurationBuilder()
                .AddJsonFile(configFile ?? DaemonOptions.DefaultConfigFile, optional: configFile is null)
                .AddEnvironmentVariables("FIRESHARP_")
                .AddCommandLine(settings)
                .Build();
            options = DaemonOptions.FromConfiguration(configuration);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or IOException)
        {
            Console.Error.WriteLine($"firesharp serve: invalid configuration: {e.Message}");
            return 2;
        }

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
            return 1;
        }
    }
}
