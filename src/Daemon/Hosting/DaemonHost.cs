using System.Net;
using System.Security.Cryptography.X509Certificates;
using FireSharp.Daemon.Auth;
using FireSharp.Daemon.Functions;
using FireSharp.Daemon.Metrics;
using FireSharp.Daemon.Tracing;
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
/// Builds the daemon: Kestrel (HTTP/2 only) on the Unix socket and optionally on TCP with mutual TLS (and, apart,
/// the Prometheus metrics listener: <see cref="MetricsEndpoint"/>), the
/// VmService behind <see cref="ErrorInterceptor"/>, gRPC health and reflection, Serilog, and systemd
/// integration. READY=1 reaches systemd only after <see cref="DaemonStartup"/> has probed KVM and loaded
/// the state directory.
/// </summary>
public static class DaemonHost
{
    /// <param name="options">Validated daemon options.</param>
    /// <param name="launcher">How workers start; null = <see cref="ProcessWorkerLauncher"/> on the configured binary.</param>
    /// <param name="serilog">The log pipeline; null = <see cref="DaemonLogging.Create"/>.</param>
    /// <param name="functionVms">The functions' VM factory; null = the real one (see <see cref="FunctionServices.AddFunctions"/>).</param>
    public static WebApplication Build(DaemonOptions options, IWorkerLauncher? launcher = null, Serilog.ILogger? serilog = null,
        Func<IServiceProvider, FireSharp.Pool.IFunctionVmFactory>? functionVms = null)
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

        var directories = new PrivateDirectories(options) { ActivatedFd = SocketActivation.ListenFd() };
        var peers = new UnixPeerPolicy(options);
        var certificates = options.TcpListen is null ? null : ClientCertificatePolicy.From(options);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            Action<ListenOptions> unix = l =>
            {
                l.Protocols = HttpProtocols.Http2;
                l.Use(UnixPeerCheck.Middleware(peers));
            };
            if (directories.ActivatedFd is { } fd) kestrel.ListenHandle((ulong)fd, unix); // firesharp.socket's
            else kestrel.ListenUnixSocket(directories.BindPath, unix);
            if (options.TcpListen is { } tcp)
                kestrel.Listen(ParseEndpoint(tcp), l =>
                {
                    l.Protocols = HttpProtocols.Http2;
                    l.UseHttps(MutualTls(options, certificates!));
                });
            MetricsEndpoint.Listen(kestrel, options);
        });

        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(directories);
        builder.Services.AddSingleton(peers);
        if (certificates is not null) builder.Services.AddSingleton(certificates);
        builder.Services.AddSingleton(HostLimits.Detect());
        builder.Services.AddSingleton(launcher ?? new ProcessWorkerLauncher(options.WorkerBinary ?? ProcessWorkerLauncher.DefaultBinary(),
            startTimeout: options.WorkerStartTimeout, seccomp: options.Seccomp, seccompTestTrigger: options.SeccompTestTrigger));
        builder.Services.AddDaemonMetrics(options);
        builder.Services.AddDaemonTracing(options);
        builder.Services.AddSingleton<VmManager>();
        builder.Services.AddHostedService<DaemonStartup>();
        builder.Services.AddFunctions(options, functionVms); // after DaemonStartup: functions load once the VMs have
        builder.Services.AddGrpc(o =>
        {
            o.Interceptors.Add<TracingInterceptor>(); // first: the call's span covers all of it, a refusal too
            o.Interceptors.Add<AuthorizationInterceptor>(); // a refused call reaches nothing else
            o.Interceptors.Add<ErrorInterceptor>();
        });
        // Reflection (for grpcurl and other generic clients) over an explicit list of services: no runtime discovery.
        builder.Services.AddSingleton(new ReflectionServiceImpl(
            Proto.V1.VmService.Descriptor, Proto.V1.FunctionService.Descriptor, Grpc.Health.V1.Health.Descriptor, Grpc.Reflection.V1Alpha.ServerReflection.Descriptor));
        builder.Services.AddGrpcHealthChecks()
            .AddCheck("kvm", () => KvmSystem.Probe(out var message) == KvmUnavailableReason.None
                ? HealthCheckResult.Healthy()
                : HealthCheckResult.Unhealthy(message));

        var app = builder.Build();
        app.UseMetricsEndpoint(options);
        app.MapGrpcService<VmGrpcService>();
        app.MapFunctions();
        app.MapGrpcHealthChecksService();
        app.MapGrpcService<ReflectionServiceImpl>();
        return app;
    }

    /// <summary>"host:port", "[v6]:port" or "*:port" (every address).</summary>
    public static IPEndPoint ParseEndpoint(string text) =>
        TryParseEndpoint(text, out var ep) ? ep : throw new ArgumentException($"configuration TcpListen='{text}' is not host:port");

    /// <summary>As <see cref="ParseEndpoint"/>; false for text that is not an endpoint.</summary>
    public static bool TryParseEndpoint(string text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPEndPoint? endpoint)
    {
        ArgumentNullException.ThrowIfNull(text);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var ports = System.Globalization.NumberStyles.None;
        endpoint = null;
        if (text.StartsWith("*:", StringComparison.Ordinal) && int.TryParse(text.AsSpan(2), ports, inv, out int anyPort) && anyPort is > 0 and <= 65535)
            endpoint = new IPEndPoint(IPAddress.IPv6Any, anyPort);
        else if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0)
            endpoint = ep;
        else if (text.StartsWith("localhost:", StringComparison.Ordinal) && int.TryParse(text.AsSpan(10), ports, inv, out int port) && port is > 0 and <= 65535)
            endpoint = new IPEndPoint(IPAddress.Loopback, port);
        return endpoint is not null;
    }

    /// <summary>
    /// Server certificate from PEM; a client certificate is required and must pass <paramref name="certificates"/>
    /// (issued by TlsClientCa, directly or through intermediate CAs the client sends; clientAuth EKU; not revoked); a refused one fails the handshake.
    /// </summary>
    private static HttpsConnectionAdapterOptions MutualTls(DaemonOptions options, ClientCertificatePolicy certificates) => new()
    {
        ServerCertificate = X509Certificate2.CreateFromPemFile(options.TlsCertificate!, options.TlsKey!),
        ClientCertificateMode = ClientCertificateMode.RequireCertificate,
        // The chain's extra store holds what the client sent besides its certificate: intermediate CAs under TlsClientCa.
        ClientCertificateValidation = (cert, chain, errors) => certificates.Accepts(cert, out _, chain?.ChainPolicy.ExtraStore),
    };

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
/// ready) and loads the state directory (adopting live workers). Before Kestrel binds, it creates the private
/// directories (<see cref="PrivateDirectories"/>); once the server listens, it publishes the socket with its mode and group.
/// </summary>
public sealed partial class DaemonStartup(DaemonOptions options, VmManager manager, PrivateDirectories directories, UnixPeerPolicy peers,
    ILogger<DaemonStartup> logger) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken)
    {
        // A socket file left by a daemon that crashed: it is replaced when the new socket is published. (Not when
        // socket-activated: the file is systemd's, bound and answering already.)
        if (directories.ActivatedFd is null && File.Exists(options.Socket))
        {
            // Stale only if nobody answers on it: never take the socket of a daemon that is running.
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
            try
            {
                probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(options.Socket));
                throw new InvalidOperationException($"another daemon is listening on {options.Socket}");
            }
            catch (System.Net.Sockets.SocketException) { }
            LogStaleSocket(logger, options.Socket);
        }
        directories.Prepare();
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
        directories.PublishSocket();
        LogListening(logger, directories.ActivatedFd is null ? options.Socket : $"the socket passed by systemd (fd {directories.ActivatedFd})", options.TcpListen ?? "no TCP", string.Join(",", peers.AllowedUids), string.Join(",", peers.AllowedGids));
        return Task.CompletedTask;
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppedAsync(CancellationToken cancellationToken)
    {
        await manager.DisposeAsync().ConfigureAwait(false);
        if (directories.ActivatedFd is null) { try { File.Delete(options.Socket); } catch (IOException) { } }
        directories.Cleanup();
    }

    [LoggerMessage(100, LogLevel.Warning, "removed a stale socket {Socket}")]
    private static partial void LogStaleSocket(ILogger logger, string socket);

    [LoggerMessage(101, LogLevel.Information, "KVM is usable at {Device}{Note}")]
    private static partial void LogKvm(ILogger logger, string device, string note);

    [LoggerMessage(102, LogLevel.Information, "listening on {Socket} (peers allowed: uids {Uids}, gids {Gids}; {Tcp})")]
    private static partial void LogListening(ILogger logger, string socket, string tcp, string uids, string gids);
}
