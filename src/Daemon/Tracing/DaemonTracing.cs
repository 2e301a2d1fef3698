using System.Diagnostics;

namespace FireSharp.Daemon.Tracing;

/// <summary>
/// The daemon's spans (docs/observability.md, Traces): the <see cref="Source"/> every daemon span comes from, their
/// names and attributes, and the two things the processes without a tracing library need: a span's W3C
/// <c>traceparent</c> for the wire, and the spans made after the fact from the durations a worker or the guest agent
/// reports. Spans are created only while something listens (an exporter, a test); otherwise every call here is a
/// null check.
/// </summary>
public static class DaemonTracing
{
    /// <summary>The daemon's ActivitySource (the gRPC calls, the workers, the agents).</summary>
    public const string SourceName = "FireSharp.Daemon";

    /// <summary>The pool's ActivitySource (FireSharp.Pool.PoolTracing): acquire, create, invoke.</summary>
    public const string PoolSourceName = "FireSharp.Pool";

    /// <summary>Every source a tracer provider must add to see the daemon's span trees.</summary>
    public static readonly string[] SourceNames = [SourceName, PoolSourceName];

    public static readonly ActivitySource Source = new(SourceName, typeof(DaemonTracing).Assembly.GetName().Version?.ToString());

    // Span names (beside the gRPC server spans, which are named "<service>/<method>").
    public const string ResponseSpan = "send response";
    public const string WorkerLaunchSpan = "worker launch";
    public const string GuestSpan = "guest";
    public const string GuestRuntimeSpan = "guest runtime";

    /// <summary>"worker create", "worker restore": the daemon's request to a VM's worker, sent to reply read.</summary>
    public static string WorkerSpan(string request) => "worker " + request;

    /// <summary>"worker handle create": the worker's own time for a request, as it reported it.</summary>
    public static string WorkerHandleSpan(string request) => "worker handle " + request;

    /// <summary>"agent invoke", "agent function_init": the daemon's request to a guest agent, sent to reply read.</summary>
    public static string AgentSpan(string request) => "agent " + request;

    // Attributes.
    public const string VmIdTag = "firesharp.vm_id";
    public const string WorkerRequestTag = "firesharp.worker.request";
    public const string WorkerHandledTag = "firesharp.worker.handled_us";
    public const string AgentRequestTag = "firesharp.agent.request";
    public const string GuestInVmTag = "firesharp.guest.in_vm_us";
    public const string GuestReceiveToHandoffTag = "firesharp.guest.receive_to_handoff_us";
    public const string GuestHandoffToAnswerTag = "firesharp.guest.handoff_to_answer_us";
    public const string GuestAnswerToReplyTag = "firesharp.guest.answer_to_reply_us";
    public const string VsockTransitTag = "firesharp.vsock.transit_us";
    public const string TransitTag = "firesharp.transit_us";
    public const string PlacementTag = "firesharp.placement";

    /// <summary>The value of <see cref="PlacementTag"/> on a span made from a remote duration.</summary>
    public const string CenteredPlacement = "centered: the duration is measured by the remote side, its start assumes the transit splits evenly";

    /// <summary>The W3C traceparent of <paramref name="activity"/>, or "" for none.</summary>
    public static string Traceparent(Activity? activity) =>
        activity is null || activity.IdFormat != ActivityIdFormat.W3C ? "" : activity.Id ?? "";

    /// <summary>Starts a span of the daemon's source (null when nobody listens).</summary>
    public static Activity? Start(string name, ActivityKind kind = ActivityKind.Internal) => Source.StartActivity(name, kind);

    /// <summary>
    /// Records a remote side's part of a round trip as a finished child of <paramref name="roundTrip"/>: it took
    /// <paramref name="remote"/> by the remote clock, and <paramref name="roundTrip"/> saw the round trip from
    /// <paramref name="sentUtc"/> to <paramref name="repliedUtc"/>. The child is centered in the round trip (the
    /// transit, round trip minus remote time, splits evenly); its phases follow as its children, each at its offset.
    /// Returns the transit, or null when nothing was recorded (no listener, or a remote time longer than the round trip).
    /// </summary>
    public static TimeSpan? RecordRemote(Activity? roundTrip, string name, DateTime sentUtc, DateTime repliedUtc, TimeSpan remote,
        IEnumerable<(string Name, TimeSpan Start, TimeSpan Duration)> phases, IEnumerable<KeyValuePair<string, object?>>? tags = null)
    {
        var total = repliedUtc - sentUtc;
        if (remote > total || remote < TimeSpan.Zero) remote = total; // clocks of a guest may drift: never past the round trip
        var transit = total - remote;
        if (roundTrip is null) return transit;
        var start = sentUtc + transit / 2;
        using (var span = Source.StartActivity(name, ActivityKind.Internal, roundTrip.Context, tags, startTime: start))
        {
            if (span is null) return transit;
            span.SetTag(PlacementTag, CenteredPlacement);
            foreach (var (phaseName, rawOffset, rawDuration) in phases)
            {
                // The remote side's figures are not trusted: every phase is clamped into the remote span.
                var offset = rawOffset < TimeSpan.Zero || rawOffset > remote ? remote : rawOffset;
                var duration = rawDuration > remote - offset ? remote - offset : rawDuration;
                if (duration <= TimeSpan.Zero) continue;
                var phase = Source.StartActivity(phaseName, ActivityKind.Internal, span.Context, startTime: start + offset);
                if (phase is null) continue;
                phase.SetEndTime(start + offset + duration);
                phase.Stop();
            }
            span.SetEndTime(start + remote);
        }
        return transit;
    }

    /// <summary>Microseconds as a span attribute value.</summary>
    public static long Micros(TimeSpan t) => (long)(t.Ticks / 10);

    /// <summary>A duration reported in microseconds.</summary>
    // (Capped at 10 days: the figures come from a worker or a guest, and sums of them must never overflow.)
    public static TimeSpan FromMicros(ulong us) => TimeSpan.FromTicks((long)Math.Min(us, MaxRemoteMicros) * 10);

    private const ulong MaxRemoteMicros = 10UL * 24 * 3600 * 1_000_000;

    /// <summary>Marks <paramref name="activity"/> failed with <paramref name="e"/>'s type and message.</summary>
    public static void Fail(Activity? activity, Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (activity is null) return;
        activity.SetStatus(ActivityStatusCode.Error, e.Message);
        activity.SetTag("error.type", e.GetType().FullName);
    }

    /// <summary>As <see cref="Fail"/>, for an exception filter: records and returns false, so the exception goes on.</summary>
    public static bool FailWith(Activity? activity, Exception e)
    {
        Fail(activity, e);
        return false;
    }

    /// <summary>A request kind as span names show it: "UpdateRateLimiters" becomes "update_rate_limiters".</summary>
    public static string SnakeCase(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var text = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c) && i > 0) text.Append('_');
            text.Append(char.ToLowerInvariant(c));
        }
        return text.ToString();
    }
}
