using System.Diagnostics.Metrics;
using FireSharp.Pool;

namespace FireSharp.Daemon.Metrics;

/// <summary>
/// The function series: invocations by function, start kind and outcome; duration and init-duration histograms;
/// throttles by reason; GB-seconds (as byte-seconds); and, read from the pool at each scrape, concurrency in use against the limits
/// and the pool's VMs (idle, busy, creating, provisioned). The pool tells this of each invocation and throttle as
/// it counts them (<see cref="PoolOptions.Observer"/>), so Event invocations and their retries count too.
/// </summary>
public sealed class FunctionMetrics : IInvocationObserver
{
    private const double GiB = 1 << 30;

    private readonly Meter _meter;
    private readonly Counter<long> _invocations, _throttles;
    private readonly Counter<double> _byteSeconds;
    private readonly Histogram<double> _duration, _initDuration;

    public FunctionMetrics(IMeterFactory meters)
    {
        ArgumentNullException.ThrowIfNull(meters);
        _meter = meters.Create(MetricNames.Meter);
        _invocations = _meter.CreateCounter<long>("firesharp.function.invocations", null,
            "Invocations that ran or failed to initialize (start_kind warm|snapshot_cold|boot_cold; outcome success|handled_error|unhandled_error|timeout|init_error)");
        _throttles = _meter.CreateCounter<long>("firesharp.function.throttles", null, "Invocations refused at a limit, by reason");
        _byteSeconds = _meter.CreateCounter<double>("firesharp.function.billed_byte_seconds", null,
            "Billed memory-time: billed duration times memory, in byte-seconds (Lambda's GB-seconds times 2^30; Prometheus names base units)");
        _duration = MetricNames.Seconds(_meter, "firesharp.function.duration", "Invocation duration (the handler's run, as billed before rounding)", MetricNames.InvokeBuckets);
        _initDuration = MetricNames.Seconds(_meter, "firesharp.function.init.duration", "Cold starts: the new VM's init duration (restore or boot, and runtime init)", MetricNames.StartBuckets);
    }

    /// <summary>The gauges over <paramref name="pool"/>, read at each scrape.</summary>
    internal void Observe(FunctionPool pool)
    {
        _meter.CreateObservableGauge("firesharp.function.concurrency.in_use", () => PerFunction(pool, static f => f.Stats.InFlight),
            null, "In-flight invocations of a function (VMs being created for one included)");
        _meter.CreateObservableGauge("firesharp.function.concurrency.reserved", () => pool.ListFunctions()
                .Where(f => f.ReservedConcurrency is not null)
                .Select(f => new Measurement<long>(f.ReservedConcurrency!.Value, Function(f))),
            null, "A function's reserved concurrency (its limit), for functions that have one");
        _meter.CreateObservableGauge("firesharp.functions.concurrency", () => Account(pool.GetAccountSettings()),
            null, "The account's concurrency: kind limit (the daemon's FunctionConcurrencyLimit), in_use, unreserved (limit minus reservations), unreserved_available");
        _meter.CreateObservableGauge("firesharp.function.vms", () => pool.ListFunctions().SelectMany(Vms),
            null, "A function's VMs by state (idle, busy, creating, draining: an older version's, not yet shut down)");
        _meter.CreateObservableGauge("firesharp.function.provisioned", () => pool.ListFunctions().SelectMany(Provisioned),
            null, "Provisioned concurrency: kind configured, and ready (provisioned VMs that exist now)");
    }

    public void Invoked(string functionName, InvokeResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        string kind = Labels.Of(result.StartKind);
        _invocations.Add(1, new("function", functionName), new("start_kind", kind), new("outcome", Outcome(result)));
        _duration.Record(result.Duration.TotalSeconds, new("function", functionName), new("start_kind", kind));
        if (result.InitDuration is { } init) _initDuration.Record(init.TotalSeconds, new("function", functionName), new("start_kind", kind));
        _byteSeconds.Add((double)result.GbSeconds * GiB, new KeyValuePair<string, object?>("function", functionName));
    }

    public void Throttled(string functionName, ThrottleReason reason) =>
        _throttles.Add(1, new("function", functionName), new("reason", Labels.Of(reason)));

    private static string Outcome(InvokeResult r) =>
        r.InitFailed ? "init_error"
        : r.FunctionError is null ? "success"
        : r.VmStatus == VmInvokeStatus.Timeout ? "timeout"
        : r.FunctionError == FunctionErrorKind.Handled ? "handled_error"
        : "unhandled_error";

    private static KeyValuePair<string, object?> Function(FunctionInfo f) => new("function", f.Definition.Name);

    private static IEnumerable<Measurement<long>> PerFunction(FunctionPool pool, Func<FunctionInfo, long> value) =>
        pool.ListFunctions().Select(f => new Measurement<long>(value(f), Function(f)));

    private static IEnumerable<Measurement<long>> Account(AccountSettings a) =>
    [
        new(a.ConcurrencyLimit, new KeyValuePair<string, object?>("kind", "limit")),
        new(a.InFlight, new KeyValuePair<string, object?>("kind", "in_use")),
        new(a.UnreservedConcurrency, new KeyValuePair<string, object?>("kind", "unreserved")),
        new(a.UnreservedAvailable, new KeyValuePair<string, object?>("kind", "unreserved_available")),
    ];

    private static IEnumerable<Measurement<long>> Vms(FunctionInfo f) =>
    [
        new(f.Stats.IdleVms, Function(f), new("state", "idle")),
        new(f.Stats.BusyVms, Function(f), new("state", "busy")),
        new(f.Stats.CreatingVms, Function(f), new("state", "creating")),
        new(f.Stats.DrainingVms, Function(f), new("state", "draining")),
    ];

    private static IEnumerable<Measurement<long>> Provisioned(FunctionInfo f) =>
    [
        new(f.ProvisionedConcurrency, Function(f), new("kind", "configured")),
        new(f.Stats.ProvisionedReady, Function(f), new("kind", "ready")),
    ];
}
