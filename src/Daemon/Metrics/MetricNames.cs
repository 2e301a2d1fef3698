using System.Diagnostics.Metrics;

namespace FireSharp.Daemon.Metrics;

/// <summary>
/// The daemon's meter and histogram buckets. Instrument names are OpenTelemetry style (dots, a unit apart); the
/// Prometheus exporter turns <c>firesharp.vm.boot.duration</c> with unit <c>s</c> into
/// <c>firesharp_vm_boot_duration_seconds</c>, unit <c>By</c> into <c>_bytes</c>, and gives counters <c>_total</c>.
/// docs/observability.md lists every series.
/// </summary>
public static class MetricNames
{
    /// <summary>The one meter every daemon instrument belongs to.</summary>
    public const string Meter = "FireSharp.Daemon";

    /// <summary>Boot and restore times: from 10 ms (a tiny guest restored) to 5 minutes (a Linux boot under PVM).</summary>
    internal static readonly IReadOnlyList<double> StartBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

    /// <summary>Invocation durations: 1 ms to 15 minutes (Lambda's longest timeout).</summary>
    internal static readonly IReadOnlyList<double> InvokeBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900];

    /// <summary>A histogram of seconds with <paramref name="buckets"/> as its bucket boundaries.</summary>
    internal static Histogram<double> Seconds(Meter meter, string name, string description, IReadOnlyList<double> buckets) =>
        meter.CreateHistogram(name, "s", description, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = buckets });
}
