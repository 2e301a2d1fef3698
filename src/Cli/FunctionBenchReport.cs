using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FireSharp.Daemon.Tracing;

namespace FireSharp.Cli;

/// <summary>
/// P7 of <c>make bench-fn</c>: where a warm invocation's time goes. Each timed invocation carries a client span
/// (a <c>traceparent</c> header); the daemon, run with <c>TraceFile</c>, writes its spans there; this matches them
/// by trace id and splits the client's round trip into the client↔daemon transport, the daemon's own (host-side)
/// time, the vsock transit and the guest's in-VM time (its function runtime and its agent).
/// </summary>
internal static class FunctionBenchReport
{
    /// <summary>The goal: host-side time per warm invoke.</summary>
    public const double GoalP50Ms = 1, GoalP99Ms = 5;

    /// <summary>One timed invocation: its trace and the client's round trip.</summary>
    public sealed record Sample(ActivityTraceId TraceId, double RoundTripMs);

    /// <summary>A new client span's trace id and its traceparent header.</summary>
    public static (ActivityTraceId TraceId, string Traceparent) NewTrace()
    {
        var trace = ActivityTraceId.CreateRandom();
        return (trace, $"00-{trace.ToHexString()}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
    }

    /// <summary>The daemon's spans by trace id (the file's lines; unreadable lines are skipped).</summary>
    public static Dictionary<string, List<JsonElement>> ReadSpans(string path)
    {
        var byTrace = new Dictionary<string, List<JsonElement>>(StringComparer.Ordinal);
        if (!File.Exists(path)) return byTrace;
        foreach (var line in File.ReadLines(path))
        {
            if (line.Length == 0) continue;
            JsonElement span;
            try { span = JsonDocument.Parse(line).RootElement.Clone(); }
            catch (JsonException) { continue; }
            string trace = span.GetProperty("trace_id").GetString() ?? "";
            if (!byTrace.TryGetValue(trace, out var list)) byTrace[trace] = list = [];
            list.Add(span);
        }
        return byTrace;
    }

    /// <summary>Prints the breakdown of <paramref name="samples"/> (markdown), or says why it cannot.</summary>
    public static void Print(string title, IReadOnlyList<Sample> samples, Dictionary<string, List<JsonElement>> spans)
    {
        var rows = new List<double[]>();
        foreach (var s in samples)
        {
            if (!spans.TryGetValue(s.TraceId.ToHexString(), out var trace)) continue;
            var server = Find(trace, "firesharp.v1.FunctionService/Invoke");
            var agent = Find(trace, DaemonTracing.AgentSpan("invoke"));
            if (server is not { } srv || agent is not { } ag) continue;
            double daemon = Ms(srv), agentRt = Ms(ag);
            double inVm = Attr(ag, DaemonTracing.GuestInVmTag) / 1000, runtime = Attr(ag, DaemonTracing.GuestHandoffToAnswerTag) / 1000;
            double transit = agentRt - inVm;
            rows.Add([s.RoundTripMs, s.RoundTripMs - daemon, daemon, daemon - agentRt, agentRt, transit, inVm, runtime, inVm - runtime]);
        }
        Console.WriteLine();
        Console.WriteLine($"Warm invoke breakdown, {title}: {rows.Count} of {samples.Count} invocations traced (the daemon's spans)");
        if (rows.Count == 0)
        {
            Console.WriteLine("  no spans: is the daemon running with TraceFile, and is the agent in the rootfs new enough to report its timings?");
            return;
        }
        string[] names =
        [
            "client round trip",
            "  client <-> daemon: gRPC transport, the client (round trip - daemon)",
            "  daemon: gRPC received -> response sent",
            "    host-side: the daemon's own spans (daemon - agent round trip)",
            "    agent round trip: request sent -> reply read",
            "      vsock transit: host socket, worker's vsock device, guest kernel",
            "      guest in-VM: agent read the request -> reply handed to its socket",
            "        function runtime: handoff -> answer",
            "        guest agent: in-VM - runtime",
        ];
        Console.WriteLine("| part | p50 (ms) | p99 (ms) |");
        Console.WriteLine("|---|---|---|");
        for (int i = 0; i < names.Length; i++)
        {
            var column = rows.Select(r => r[i]).Order().ToArray();
            Console.WriteLine($"| {names[i]} | {P(column, 50)} | {P(column, 99)} |");
        }
        var host = rows.Select(r => r[3]).Order().ToArray();
        double p50 = Pct(host, 50), p99 = Pct(host, 99);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"P7 host-side per warm invoke: p50 {p50:F3} ms (goal <= {GoalP50Ms:F0} ms: {(p50 <= GoalP50Ms ? "met" : "missed")}), p99 {p99:F3} ms (goal <= {GoalP99Ms:F0} ms: {(p99 <= GoalP99Ms ? "met" : "missed")})"));
    }

    private static JsonElement? Find(List<JsonElement> trace, string name)
    {
        foreach (var span in trace)
            if (span.GetProperty("name").GetString() == name) return span;
        return null;
    }

    private static double Ms(JsonElement span) => span.GetProperty("duration_us").GetDouble() / 1000;

    private static double Attr(JsonElement span, string name) =>
        span.GetProperty("attributes").TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;

    private static double Pct(double[] sorted, int p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, Math.Max(0, (int)Math.Ceiling(p / 100.0 * sorted.Length) - 1))];

    private static string P(double[] sorted, int p) => Pct(sorted, p).ToString("F3", CultureInfo.InvariantCulture);
}
