using System.Diagnostics;
using System.Text.Json;
using OpenTelemetry;

namespace FireSharp.Daemon.Tracing;

/// <summary>
/// Appends finished spans to a file, one JSON object a line (<see cref="DaemonOptions.TraceFile"/>): <c>trace_id</c>,
/// <c>span_id</c>, <c>parent_span_id</c> ("" for a root), <c>name</c>, <c>kind</c>, <c>start_unix_us</c>,
/// <c>duration_us</c>, <c>status</c> and <c>attributes</c> (strings, numbers, booleans). For <c>make bench-fn</c> and for
/// reading a trace without a collector. The file is opened for each batch, so it can be moved away between batches.
/// </summary>
public sealed class JsonLinesSpanExporter(string path) : BaseExporter<Activity>
{
    public override ExportResult Export(in Batch<Activity> batch)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            using (var json = new Utf8JsonWriter(file))
            {
                foreach (var span in batch)
                {
                    Write(json, span);
                    json.Flush();
                    json.Reset();
                    file.WriteByte((byte)'\n');
                }
            }
            return ExportResult.Success;
        }
        catch (IOException)
        {
            return ExportResult.Failure;
        }
        catch (UnauthorizedAccessException)
        {
            return ExportResult.Failure;
        }
    }

    /// <summary>One span as one JSON object.</summary>
    public static void Write(Utf8JsonWriter json, Activity span)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(span);
        json.WriteStartObject();
        json.WriteString("trace_id", span.TraceId.ToHexString());
        json.WriteString("span_id", span.SpanId.ToHexString());
        json.WriteString("parent_span_id", span.ParentSpanId == default ? "" : span.ParentSpanId.ToHexString());
        json.WriteString("name", span.DisplayName);
        json.WriteString("kind", span.Kind.ToString().ToLowerInvariant());
        json.WriteNumber("start_unix_us", (span.StartTimeUtc - DateTime.UnixEpoch).Ticks / 10);
        json.WriteNumber("duration_us", span.Duration.Ticks / 10);
        json.WriteString("status", span.Status.ToString().ToLowerInvariant());
        json.WriteStartObject("attributes");
        foreach (var (key, value) in span.TagObjects)
        {
            switch (value)
            {
                case null: break;
                case bool b: json.WriteBoolean(key, b); break;
                case int i: json.WriteNumber(key, i); break;
                case long l: json.WriteNumber(key, l); break;
                case double d: json.WriteNumber(key, d); break;
                default: json.WriteString(key, Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)); break;
            }
        }
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
