using System.Diagnostics;
using FireSharp.Daemon.Tracing;
using FireSharp.Proto.Agent;

namespace FireSharp.Daemon.Agent;

/// <summary>
/// The spans of <see cref="AgentClient"/>'s requests: an "agent &lt;request&gt;" client span from the call to the reply,
/// with the events "request sent" (the frame is written) and "reply received". For an invocation the agent reports
/// its own time (agent.proto's GuestTimings, by the guest's clock), which splits the round trip into the guest's
/// in-VM time and the vsock transit (everything between the host's socket and the agent's: the hybrid vsock socket,
/// the worker's vsock device, the guest kernel). The guest's part becomes a "guest" child with its phases.
/// </summary>
internal static class AgentTracing
{
    public const string RequestSentEvent = "request sent";
    public const string ReplyReceivedEvent = "reply received";

    public static Activity? Start(Request.BodyOneofCase request)
    {
        string kind = DaemonTracing.SnakeCase(request.ToString());
        var span = DaemonTracing.Start(DaemonTracing.AgentSpan(kind), ActivityKind.Client);
        span?.SetTag(DaemonTracing.AgentRequestTag, kind);
        return span;
    }

    /// <summary>The guest's part of an invocation: attributes of <paramref name="span"/> and a centered "guest" child.</summary>
    public static void RecordGuest(Activity? span, DateTime replied, GuestTimings? timings)
    {
        if (span is null || timings is null || replied == default) return;
        DateTime sent = span.StartTimeUtc;
        foreach (var e in span.Events)
            if (e.Name == RequestSentEvent) sent = e.Timestamp.UtcDateTime;
        span.SetTag(DaemonTracing.GuestInVmTag, (long)timings.InVmUs);
        span.SetTag(DaemonTracing.GuestReceiveToHandoffTag, (long)timings.ReceiveToHandoffUs);
        span.SetTag(DaemonTracing.GuestHandoffToAnswerTag, (long)timings.HandoffToAnswerUs);
        span.SetTag(DaemonTracing.GuestAnswerToReplyTag, (long)timings.AnswerToReplyUs);
        var handoff = DaemonTracing.FromMicros(timings.ReceiveToHandoffUs);
        var answer = handoff + DaemonTracing.FromMicros(timings.HandoffToAnswerUs);
        var transit = DaemonTracing.RecordRemote(span, DaemonTracing.GuestSpan, sent, replied, DaemonTracing.FromMicros(timings.InVmUs),
        [
            ("guest agent receive", TimeSpan.Zero, handoff),
            (DaemonTracing.GuestRuntimeSpan, handoff, DaemonTracing.FromMicros(timings.HandoffToAnswerUs)),
            ("guest agent reply", answer, DaemonTracing.FromMicros(timings.AnswerToReplyUs)),
        ]);
        if (transit is { } t) span.SetTag(DaemonTracing.VsockTransitTag, DaemonTracing.Micros(t));
    }
}
