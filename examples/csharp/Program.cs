using System.Text.Json;
using System.Text.Json.Serialization;
using FireSharp.Examples.Hello;

// The handler: answers with a greeting, the request id and the event it got. An event with
// "fail": true makes it throw (a function error).
static Task<byte[]> Handle(InvocationContext context, byte[] body)
{
    using var doc = JsonDocument.Parse(body.Length == 0 ? "null"u8.ToArray() : body);
    if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("fail", out var fail) && fail.ValueKind == JsonValueKind.True)
        throw new InvalidOperationException("the event asked me to fail");
    Console.WriteLine($"handling {context.RequestId} ({context.RemainingTime.TotalMilliseconds:F0} ms left)");
    var reply = new Reply("hello from C# NativeAOT", context.RequestId,
        Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_NAME") ?? "", doc.RootElement.Clone());
    return Task.FromResult(JsonSerializer.SerializeToUtf8Bytes(reply, ReplyJson.Default.Reply));
}

using var runtime = RuntimeClient.FromEnvironment();
try
{
    // Init work would go here; a failure is reported with /runtime/init/error.
    if (Environment.GetEnvironmentVariable("HELLO_FAIL_INIT") == "1") throw new InvalidOperationException("HELLO_FAIL_INIT=1");
}
catch (Exception e)
{
    await runtime.ReportInitErrorAsync(e);
    return 1;
}
await runtime.RunAsync(Handle);
return 0;

internal sealed record Reply(string Message, string RequestId, string FunctionName, JsonElement Event);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(Reply))]
internal sealed partial class ReplyJson : JsonSerializerContext;
