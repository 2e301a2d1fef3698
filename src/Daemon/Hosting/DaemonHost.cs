using System.Net;
using System.Security.Cryptography.X509Certificates;
using FireSharp.Daemon.Functions;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Worker.Protocol;
using FireSharp.Kvm;
using Grpc.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Serilog;
using ILogger = Microsoft.Extensions.Logging.ILogger;

using FireSharp.Kvm.Interop;

namespace FireSharp.Daemon.Hosting;

/// <summary>
/// Builds the daemon: Kestrel (HTTP/2 only) on the Unix socket and optionally on TCP with mutual TLS, the
/// VmService behind <see cref="ErrorInterceptor"/>, gRPC health and reflection, Serilog, and systemd
/// integration. READY=1 reaches systemd only after <see cref="DaemonStartup"/> has probed KVM and loaded
/// the state directory.
/// </summary>
public static class DaemonHost
{
    /// <param name="options">Validated daemon options.</param>
    /// <param name="launcher">How workers start; null = <see cref="ProcessWorkerLauncher"/> on the configured binary.</param>
    /// <param name="serilog">The log pipeline; null = <see cref="DaemonLogging.Create"/>.</param>
    public static WebApplication Build(DaemonOptions options, IWorkerLauncher? launcher = null, Serilog.ILogger? serilog = null)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });

        builder.Logging.ClearProviders();
        builder.Services.AddSerilog(serilog ?? DaemonLogging.Create(options), dispose: serilog is null);

        builder.Host.UseSystemd();
        // UseSystemd() only engages when the parent process is systemd. A supervisor that speaks the same
        // protocol (or a test) sets NOTIFY_SOCKET without being our parent: notify it too.
        if (!SystemdHelpers.IsSystemdService() && !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NOTIFY_SOCKET")))
        {
            builder.Services.AddSingleton<ISystemdNotifier, SystemdNotifier>();
            builder.Services.AddSingleton<IHostLifetime, SystemdLifetime>();
        }

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.ListenUnixSocket(options.Socket, l => l.Protocols = HttpProtocols.Http2);
            if (options.TcpListen is { } tcp)
                kestrel.Listen(ParseEndpoint(tcp), l =>
                {
                    l.Protocols = HttpProtocols.Http2;
                    l.UseHttps(MutualTls(options));
                });
        });

        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(HostLimits.Detect());
        builder.Services.AddSingleton(launcher ?? new ProcessWorkerLauncher(options.WorkerBinary ?? ProcessWorkerLauncher.DefaultBinary(),
            startTimeout: options.WorkerStartTimeout));
        builder.Services.AddSingleton<VmManager>();
        builder.Services.AddHostedService<DaemonStartup>();
        builder.Services.AddFunctions(options); // after DaemonStartup: functions load once the VMs have
        builder.Services.AddGrpc(o => o.Interceptors.Add<ErrorInterceptor>());
        // Reflection (for grpcurl and other generic clients) over an explicit list of services: no runtime discovery.
        builder.Services.AddSingleton(new ReflectionServiceImpl(
            Proto.V1.VmService.Descriptor, Proto.V1.FunctionService.Descriptor, Grpc.Health.V1.Health.Descriptor, Grpc.Reflection.V1Alpha.ServerReflection.Descriptor));
        builder.Services.AddGrpcHealthChecks()
            .AddCheck("kvm", () => KvmSystem.Probe(out var message) == KvmUnavailableReason.None
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy(message));

        var app = builder.Build();
        app.MapGrpcService<VmGrpcService>();
        app.MapFunctions();
        app.MapGrpcHealthChecksService();
        app.MapGrpcService<ReflectionServiceImpl>();
        return app;
    }

    /// <summary>"host:port", "[v6]:port" or "*:port" (every address).</summary>
    public static IPEndPoint ParseEndpoint(string text)
    {
        if (text.StartsWith("*:", StringComparison.Ordinal) && int.TryParse(text.AsSpan(2), out int anyPort))
            return new IPEndPoint(IPAddress.IPv6Any, anyPort);
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0) return ep;
        if (text == "localhost" || text.StartsWith("localhost:", StringComparison.Ordinal))
            return new IPEndPoint(IPAddress.Loopback, int.Parse(text.AsSpan(10), System.Globalization.CultureInfo.InvariantCulture));
        throw new ArgumentException($"configuration TcpListen='{text}' is not host:port");
    }

    /// <summary>Server certificate from PEM; a client certificate is required and must chain to the configured CA.</summary>
    private static HttpsConnectionAdapterOptions MutualTls(DaemonOptions options)
    {
        var ca = X509CertificateLoader.LoadCertificateFromFile(options.TlsClientCa!);
        return new HttpsConnectionAdapterOptions
        {
            ServerCertificate = X509Certificate2.CreateFromPemFile(options.TlsCertificate!, options.TlsKey!),
            ClientCertificateMode = ClientCertificateMode.RequireCertificate,
            ClientCertificateValidation = (cert, _, _) => ChainsTo(cert, ca),
        };
    }

    /// <summary>True if the certificate chains to <paramref name="root"/> alone (the system store is not consulted).</summary>
    public static bool ChainsTo(X509Certificate2 certificate, X509Certificate2 root)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(root);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate);
    }
}

/// <summary>
/// Runs before Kestrel accepts calls and before READY=1: probes KVM (a daemon that cannot run VMs is not
/// ready) and loads the state directory (adopting live workers). Once the server listens, it sets the
/// socket's mode and group.
/// </summary>
public sealed partial class DaemonStartup(DaemonOptions options, VmManager manager, ILogger<DaemonStartup> logger) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken)
    {
        // A socket file left by a daemon that crashed: Kestrel would fail to bind.
        string? dir = Path.GetDirectoryName(options.Socket);
        if (dir is not null) Directory.CreateDirectory(dir);
        if (File.Exists(options.Socket))
        {
            // Stale only if nobody answers on it: never take the socket of a daemon that is running.
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
            try
            {
                probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(options.Socket));
                throw new InvalidOperationException($"another daemon is listening on {options.Socket}");
            }
            catch (System.Net.Sockets.SocketException) { }
            File.Delete(options.Socket);
            LogStaleSocket(logger, options.Socket);
        }
        return Task.CompletedTask;
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var reason = KvmSystem.Probe(out string message);
        if (reason != KvmUnavailableReason.None)
            throw new InvalidOperationException($"KVM is not usable ({reason}): {message}");
        LogKvm(logger, KvmSystem.DevicePath, KvmSystem.IsPvmHost ? " (PVM: software virtualization)" : "");
        await manager.InitializeAsync(cancellationToken).ConfigureAwait(false);
    }

    public Task StartedAsync(CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(options.Socket, options.SocketMode);
        if (options.SocketGroup is { } group) ProcInfo.ChangeGroup(options.Socket, group);
        LogListening(logger, options.Socket, options.TcpListen ?? "no TCP");
        return Task.CompletedTask;
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppedAsync(CancellationToken cancellationToken)
    {
        await manager.DisposeAsync().ConfigureAwait(false);
        try { File.Delete(options.Socket); } catch (IOException) { }
    }

    [LoggerMessage(100, LogLevel.Warning, "removed a stale socket {Socket}")]
    private static partial void LogStaleSocket(ILogger logger, string socket);

    [LoggerMessage(101, LogLevel.Information, "KVM is usable at {Device}{Note}")]
    private static partial void LogKvm(ILogger logger, string device, string note);

    [LoggerMessage(102, LogLevel.Information, "listening on {Socket} ({Tcp})")]
    private static partial void LogListening(ILogger logger, string socket, string tcp);
}
