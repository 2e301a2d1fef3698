using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Logs;

/// <summary>
/// One line of a worker's log (<c>worker.log</c>): the JSON object the worker's <c>JsonLineLogger</c> writes, or, for
/// anything else on its stderr (the jailer's first stage, the .NET runtime's own crash report), the raw text as a
/// <see cref="LogLevel.Warning"/> without a category.
/// </summary>
public sealed record WorkerLogLine(DateTimeOffset? Time, LogLevel Level, string Category, int EventId, string Message, string? Exception,
    IReadOnlyList<KeyValuePair<string, string>> Properties)
{
    /// <summary>The category given to lines that are not the worker's JSON.</summary>
    public const string RawCategory = "firesharp-vmm";

    public static WorkerLogLine Parse(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        if (line.StartsWith('{'))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("m", out var m) && m.ValueKind == JsonValueKind.String)
                {
                    DateTimeOffset? time = root.TryGetProperty("t", out var t) && t.ValueKind == JsonValueKind.String
                        && DateTimeOffset.TryParse(t.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var parsed) ? parsed : null;
                    var level = root.TryGetProperty("l", out var l) && l.ValueKind == JsonValueKind.String
                        && Enum.TryParse<LogLevel>(l.GetString(), ignoreCase: false, out var lv) && Enum.IsDefined(lv) ? lv : LogLevel.Information;
                    string category = root.TryGetProperty("c", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : RawCategory;
                    int eventId = root.TryGetProperty("e", out var e) && e.TryGetInt32(out int ev) ? ev : 0;
                    string? exception = root.TryGetProperty("x", out var x) && x.ValueKind == JsonValueKind.String ? x.GetString() : null;
                    var props = new List<KeyValuePair<string, string>>();
                    if (root.TryGetProperty("p", out var p) && p.ValueKind == JsonValueKind.Object)
                        foreach (var prop in p.EnumerateObject())
                            if (prop.Value.ValueKind == JsonValueKind.String) props.Add(new(prop.Name, prop.Value.GetString()!));
                    return new WorkerLogLine(time, level, category, eventId, m.GetString()!, exception, props);
                }
            }
            catch (JsonException) { }
        }
        return new WorkerLogLine(null, LogLevel.Warning, RawCategory, 0, line, null, []);
    }

    /// <summary>For people (<c>firesharp vm logs --vmm</c>): <c>2026-12-07T17:00:00.123Z INFO  FireSharp.Worker: message</c>.</summary>
    public string Render()
    {
        string time = Time is { } t ? t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture) : "-";
        string text = $"{time} {LevelName(Level),-5} {Category}: {Message}";
        return Exception is null ? text : text + "\n" + Exception;
    }

    /// <summary>The short level names of the worker's log as shown to people.</summary>
    public static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Trace => "TRACE",
        LogLevel.Debug => "DEBUG",
        LogLevel.Information => "INFO",
        LogLevel.Warning => "WARN",
        LogLevel.Error => "ERROR",
        _ => "CRIT",
    };
}
