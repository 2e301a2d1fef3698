using System.Diagnostics;

namespace FireSharp.Pool;

/// <summary>
/// The pool's spans, from the BCL's ActivitySource (no tracing library: the daemon decides who listens). In an
/// invocation's trace: "pool acquire" (admission and a warm VM, or a new one: "pool create vm", under which the
/// factory's restore or boot shows), then "pool invoke" (the VM runs the event).
/// </summary>
public static class PoolTracing
{
    public const string SourceName = "FireSharp.Pool";
    public const string AcquireSpan = "pool acquire";
    public const string CreateVmSpan = "pool create vm";
    public const string InvokeSpan = "pool invoke";

    public static readonly ActivitySource Source = new(SourceName);

    internal static Activity? Start(string name, string function, string requestId)
    {
        var span = Source.StartActivity(name);
        span?.SetTag("faas.name", function);
        span?.SetTag("faas.invocation_id", requestId);
        return span;
    }

    /// <summary>Ends <paramref name="span"/>, failed with <paramref name="error"/> unless it is null.</summary>
    internal static void End(Activity? span, string? error)
    {
        if (span is null) return;
        if (error is not null) span.SetStatus(ActivityStatusCode.Error, error);
        span.Dispose();
    }

    internal static string Name(StartKind kind) => kind switch
    {
        StartKind.Warm => "warm",
        StartKind.SnapshotCold => "snapshot_cold",
        _ => "boot_cold",
    };
}
