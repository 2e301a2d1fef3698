using System.Text.Json;
using System.Text.Json.Serialization;

namespace FireSharp.Agent.Functions;

// The JSON documents of the Runtime and Extensions APIs (serialized by source generation: the
// agent is NativeAOT and has no reflection-based serializer).

/// <summary>The body of a 4xx/5xx answer of the Runtime and Extensions APIs, and of function errors.</summary>
internal sealed record ErrorDocument(string ErrorMessage, string ErrorType);

/// <summary>The body of a 202 answer.</summary>
internal sealed record StatusDocument(string Status);

/// <summary>POST /extension/register: which events the extension wants.</summary>
internal sealed record RegisterRequest(string[]? Events);

/// <summary>The answer to /extension/register.</summary>
internal sealed record RegisterResponse(string FunctionName, string FunctionVersion, string Handler);

internal sealed record TracingDocument(string Type, string Value);

/// <summary>An event of /extension/event/next (INVOKE or SHUTDOWN).</summary>
internal sealed record ExtensionEvent
{
    public required string EventType { get; init; }
    public required long DeadlineMs { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? RequestId { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? InvokedFunctionArn { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public TracingDocument? Tracing { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ShutdownReason { get; init; }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ErrorDocument))]
[JsonSerializable(typeof(StatusDocument))]
[JsonSerializable(typeof(RegisterRequest))]
[JsonSerializable(typeof(RegisterResponse))]
[JsonSerializable(typeof(ExtensionEvent))]
internal sealed partial class FunctionJson : JsonSerializerContext
{
    public static byte[] Error(string type, string message) =>
        JsonSerializer.SerializeToUtf8Bytes(new ErrorDocument(message, type), Default.ErrorDocument);

    /// <summary>errorType of an error document, or null if <paramref name="body"/> is not one.</summary>
    public static string? ErrorTypeOf(ReadOnlySpan<byte> body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("errorType", out var t) && t.ValueKind == JsonValueKind.String
                ? t.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
