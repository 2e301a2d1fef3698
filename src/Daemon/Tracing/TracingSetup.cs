using FireSharp.Daemon.Metrics;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace FireSharp.Daemon.Tracing;

/// <summary>
/// The tracer provider, when something is to receive the spans: OTLP (<see cref="DaemonOptions.OtlpEndpoint"/>) and
/// the JSON-lines file (<see cref="DaemonOptions.TraceFile"/>). With neither, nothing listens to
/// <see cref="DaemonTracing.SourceNames"/> and no span is made.
/// </summary>
public static class TracingSetup
{
    public static IServiceCollection AddDaemonTracing(this IServiceCollection services, DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.OtlpEndpoint is null && options.TraceFile is null) return services;
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("firesharp", serviceVersion: typeof(MetricsEndpoint).Assembly.GetName().Version?.ToString()))
            .WithTracing(t =>
            {
                t.AddSource(DaemonTracing.SourceNames);
                if (options.OtlpEndpoint is { } endpoint)
                    t.AddOtlpExporter(o =>
                    {
                        o.Endpoint = new Uri(endpoint);
                        o.Protocol = options.OtlpProtocol == "http/protobuf" ? OtlpExportProtocol.HttpProtobuf : OtlpExportProtocol.Grpc;
                    });
                if (options.TraceFile is { } file)
                    t.AddProcessor(new BatchActivityExportProcessor(new JsonLinesSpanExporter(file), scheduledDelayMilliseconds: 1000));
            });
        return services;
    }
}
