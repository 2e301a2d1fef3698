using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;

namespace FireSharp.Logging;

/// <summary>
/// The worker's log sink: one JSON object a line, in pure ASCII, on stderr (the VM's <c>worker.log</c>, which the daemon
/// tails and logs again with the VM's id: docs/observability.md, "Logs"). No serializer is linked for it, so the slim
/// worker stays slim: the fields are few and fixed.
/// <code>{"t":"2026-12-07T17:00:00.123Z","l":"Information","c":"FireSharp.Worker","e":5002,"m":"the message","x":"exception","p":{"Name":"value"}}</code>
/// <c>x</c> (the exception) and <c>p</c> (the message's named values, as text) are left out when empty.
/// </summary>
public sealed class JsonLineLogger(LogLevel minimum, string category, TextWriter? output = null) : ILogger
{
    private static readonly Lock s_write = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum && logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        ArgumentNullException.ThrowIfNull(formatter);
        string line = Format(DateTimeOffset.UtcNow, logLevel, category, eventId.Id, formatter(state, exception), exception?.ToString(),
            state as IReadOnlyList<KeyValuePair<string, object?>>);
        var writer = output ?? Console.Error;
        lock (s_write)
        {
            writer.Write(line);
            writer.Flush();
        }
    }

    /// <summary>One event as its line (with the newline).</summary>
    public static string Format(DateTimeOffset time, LogLevel level, string category, int eventId, string message, string? exception,
        IReadOnlyList<KeyValuePair<string, object?>>? properties)
    {
        var sb = new StringBuilder(128 + message.Length);
        sb.Append("{\"t\":\"").Append(time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
        sb.Append("\",\"l\":\"").Append(level.ToString());
        sb.Append("\",\"c\":");
        Quote(sb, category);
        if (eventId != 0) sb.Append(",\"e\":").Append(eventId.ToString(CultureInfo.InvariantCulture));
        sb.Append(",\"m\":");
        Quote(sb, message);
        if (!string.IsNullOrEmpty(exception))
        {
            sb.Append(",\"x\":");
            Quote(sb, exception);
        }
        bool any = false;
        foreach (var (key, value) in properties ?? [])
        {
            if (key == "{OriginalFormat}" || value is null) continue;
            sb.Append(any ? "," : ",\"p\":{");
            any = true;
            Quote(sb, key);
            sb.Append(':');
            Quote(sb, Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");
        }
        if (any) sb.Append('}');
        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>A JSON string: quotes, backslashes, control and non-ASCII characters escaped, so the line is ASCII whatever the console's encoding.</summary>
    private static void Quote(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char ch in s)
        {
            switch (ch)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (ch < 0x20 || ch > 0x7e) sb.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(ch);
                    break;
            }
        }
        sb.Append('"');
    }
}
