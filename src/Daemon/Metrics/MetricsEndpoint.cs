using FireSharp.Daemon.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace FireSharp.Daemon.Metrics;

/// <summary>
/// The Prometheus listener (<see cref="DaemonOptions.MetricsListen"/>): its own Kestrel endpoint, HTTP/1.1 only, where
/// <c>GET /metrics</c> is the one thing served. Its connections are marked (<see cref="MetricsConnectionFeature"/>) when
/// accepted; a request on them for any other path gets 404 before it can reach a gRPC service, and the scrape path
/// answers on no other listener. The series come from the <see cref="MetricNames.Meter"/> meter through OpenTelemetry's
/// Prometheus exporter. The instruments exist (and count) with the listener off; only the export is left out.
/// </summary>
public static class MetricsEndpoint
{
    public const string Path = "/metrics";

    /// <summary>The instruments, and the OpenTelemetry meter provider with its Prometheus exporter when the listener is on.</summary>
    public static IServiceCollection AddDaemonMetrics(this IServiceCollection services, DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        services.AddSingleton<VmMetrics>();
        if (options.MetricsListen is not null)
            services.AddOpenTelemetry()
                .ConfigureResource(r => r.AddService("firesharp", serviceVersion: typeof(MetricsEndpoint).Assembly.GetName().Version?.ToString()))
                .WithMetrics(m => m.AddMeter(MetricNames.Meter).AddPrometheusExporter());
        return services;
    }

    /// <summary>Adds the metrics listener to Kestrel when it is configured.</summary>
    public static void Listen(KestrelServerOptions kestrel, DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MetricsListen is not { } listen) return;
        kestrel.Listen(DaemonHost.ParseEndpoint(listen), l =>
        {
            l.Protocols = HttpProtocols.Http1;
            l.Use(next => connection =>
            {
                connection.Features.Set(MetricsConnectionFeature.Instance);
                return next(connection);
            });
        });
    }

    /// <summary>The guard and the scrape endpoint, on the metrics listener's connections only.</summary>
    public static void UseMetricsEndpoint(this WebApplication app, DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MetricsListen is null) return;
        app.Use(static (context, next) =>
        {
            if (IsMetricsConnection(context) && !(HttpMethods.IsGet(context.Request.Method) && context.Request.Path == Path))
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            }
            return next(context);
        });
        app.UseOpenTelemetryPrometheusScrapingEndpoint(static context => IsMetricsConnection(context) && context.Request.Path == Path);
    }

    private static bool IsMetricsConnection(HttpContext context) => context.Features.Get<MetricsConnectionFeature>() is not null;
}

/// <summary>Marks a connection accepted on the metrics listener.</summary>
public sealed class MetricsConnectionFeature
{
    public static readonly MetricsConnectionFeature Instance = new();

    private MetricsConnectionFeature() { }
}
