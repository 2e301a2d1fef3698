using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FireSharp.Cli.Output;

/// <summary>
/// <c>-o yaml</c>: the JSON of <see cref="ProtoJson"/> written as block-style YAML 1.2. Strings are plain only when
/// they cannot be read as anything else (start with a letter, '_' or '/'; only letters, digits and <c>_./@+-</c>
/// and inner spaces; not a YAML 1.1 boolean or null word); every other string is double-quoted with JSON's escapes,
/// which YAML's double-quoted style reads the same. Numbers, booleans and null are written as JSON has them.
/// Written here rather than with a YAML library: it is a few lines over System.Text.Json, and keeps the
/// NativeAOT CLI's dependencies (and the lock files other branches change) as they are.
/// </summary>
public static class Yaml
{
    private static readonly HashSet<string> Reserved = new(StringComparer.OrdinalIgnoreCase)
    {
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    };

    public static string FromJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var sb = new StringBuilder();
        WriteValue(sb, doc.RootElement, 0, topLevel: true);
        return sb.ToString();
    }

    private static void WriteValue(StringBuilder sb, JsonElement e, int indent, bool topLevel = false)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object when e.EnumerateObject().Any():
                if (!topLevel) sb.Append('\n');
                WriteObject(sb, e, indent, firstPrefix: null);
                break;
            case JsonValueKind.Array when e.GetArrayLength() > 0:
                if (!topLevel) sb.Append('\n');
                WriteArray(sb, e, indent);
                break;
            default:
                if (!topLevel) sb.Append(' ');
                sb.Append(Scalar(e)).Append('\n');
                break;
        }
    }

    /// <summary>The members at <paramref name="indent"/>; the first line starts with <paramref name="firstPrefix"/> instead (an array item's "- ").</summary>
    private static void WriteObject(StringBuilder sb, JsonElement e, int indent, string? firstPrefix)
    {
        bool first = true;
        foreach (var p in e.EnumerateObject())
        {
            sb.Append(first && firstPrefix is not null ? firstPrefix : new string(' ', indent));
            first = false;
            sb.Append(Str(p.Name)).Append(':');
            // Nested arrays go at the key's own indentation ("key:\n- a"), as kubectl writes them.
            WriteValue(sb, p.Value, p.Value.ValueKind == JsonValueKind.Array ? indent : indent + 2);
        }
    }

    private static void WriteArray(StringBuilder sb, JsonElement e, int indent)
    {
        string pad = new(' ', indent);
        foreach (var item in e.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.Object && item.EnumerateObject().Any())
                WriteObject(sb, item, indent + 2, firstPrefix: pad + "- ");
            else if (item.ValueKind == JsonValueKind.Array && item.GetArrayLength() > 0)
            {
                sb.Append(pad).Append("-\n");
                WriteArray(sb, item, indent + 2);
            }
            else sb.Append(pad).Append("- ").Append(Scalar(item)).Append('\n');
        }
    }

    private static string Scalar(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => Str(e.GetString()!),
        JsonValueKind.Object => "{}",
        JsonValueKind.Array => "[]",
        JsonValueKind.Null => "null",
        _ => e.GetRawText(), // numbers, true, false
    };

    /// <summary>A string as a plain scalar when that reads back as the same string, else double-quoted.</summary>
    public static string Str(string s) => IsPlainSafe(s) ? s : Quote(s);

    /// <summary>A double-quoted scalar: '"', '\\' and control characters escaped (as JSON does; YAML reads them alike).</summary>
    private static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c) || c is '\u2028' or '\u2029' or '\uFEFF') sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    private static bool IsPlainSafe(string s)
    {
        if (s.Length == 0 || Reserved.Contains(s)) return false;
        if (!(char.IsAsciiLetter(s[0]) || s[0] is '_' or '/')) return false;
        if (s[^1] == ' ') return false;
        foreach (char c in s)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '.' or '/' or '@' or '+' or '-' or ' ')) return false;
        return !s.Contains("  ", StringComparison.Ordinal) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out _) is false;
    }
}
