using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Google.Protobuf;

namespace FireSharp.Cli.Output;

/// <summary>
/// The one JSON shape of the CLI: protobuf JSON (the API's own mapping) with the proto field names
/// (<c>worker_pid</c>, not <c>workerPid</c>) and default values written out, so every field is present; enums by
/// their proto names (<c>VM_STATE_RUNNING</c>). A list is an object with an <c>items</c> array.
/// </summary>
public static class ProtoJson
{
    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithPreserveProtoFieldNames(true).WithFormatDefaultValues(true));

    /// <summary>One message, compact (one line: for streams).</summary>
    public static string Compact(IMessage message) => Formatter.Format(message);

    /// <summary>One message, indented.</summary>
    public static string Format(IMessage message) => Indent(Formatter.Format(message));

    /// <summary><c>{"items": [...]}</c>, indented.</summary>
    public static string Items(IEnumerable<IMessage> items) => Indent(ItemsCompact(items));

    public static string ItemsCompact(IEnumerable<IMessage> items)
    {
        var sb = new StringBuilder("{\"items\":[");
        bool first = true;
        foreach (var m in items)
        {
            if (!first) sb.Append(',');
            sb.Append(Formatter.Format(m));
            first = false;
        }
        return sb.Append("]}").ToString();
    }

    /// <summary>Re-indents JSON text (two spaces; non-ASCII and HTML characters kept as they are).</summary>
    public static string Indent(string json)
    {
        using var doc = JsonDocument.Parse(json);
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            doc.WriteTo(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }
}
