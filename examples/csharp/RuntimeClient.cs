using System.Net.Http.Headers;
using System.Text.Json;

namespace FireSharp.Examples.Hello;

/// <summary>One event from /runtime/invocation/next and its headers.</summary>
internal sealed record InvocationContext(
    string RequestId,
    long DeadlineUnixMs,
    string InvokedFunctionArn,
    string? TraceId,
    string? ClientContext,
    string? CognitoIdentity)
{
    public TimeSpan RemainingTime => DateTimeOffset.FromUnixTimeMilliseconds(DeadlineUnixMs) - DateTimeOffset.UtcNow;
}

/// <summary>
/// A small client of the AWS Lambda Runtime API (2018-06-01) at $AWS_LAMBDA_RUNTIME_API: asks
/// for events, posts responses and errors.
/// </summary>
internal sealed class RuntimeClient : IDisposable
{
    private readonly HttpClient _http;

    public RuntimeClient(string api)
    {
        _http = new HttpClient
        {
            BaseAddress = new Uri($"http://{api}/2018-06-01/runtime/"),
            // /invocation/next waits as long as there is no event.
            Timeout = Timeout.InfiniteTimeSpan,
        };
    }

    public static RuntimeClient FromEnvironment() =>
        new(Environment.GetEnvironmentVariable("AWS_LAMBDA_RUNTIME_API")
            ?? throw new InvalidOperationException("AWS_LAMBDA_RUNTIME_API is not set: run me as a Lambda runtime"));

    public async Task<(InvocationContext Context, byte[] Event)> NextAsync(CancellationToken cancellationToken = default)
    {
        using var response = await _http.GetAsync("invocation/next", cancellationToken).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
        string? Header(string name) => response.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault() : null;
        var context = new InvocationContext(
            Header("Lambda-Runtime-Aws-Request-Id") ?? throw new InvalidOperationException("no Lambda-Runtime-Aws-Request-Id"),
            long.TryParse(Header("Lambda-Runtime-Deadline-Ms"), out var deadline) ? deadline : 0,
            Header("Lambda-Runtime-Invoked-Function-Arn") ?? "",
            Header("Lambda-Runtime-Trace-Id"),
            Header("Lambda-Runtime-Client-Context"),
            Header("Lambda-Runtime-Cognito-Identity"));
        if (context.TraceId is not null) Environment.SetEnvironmentVariable("_X_AMZN_TRACE_ID", context.TraceId);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        return (context, body);
    }

    public async Task RespondAsync(string requestId, byte[] response, CancellationToken cancellationToken = default)
    {
        using var content = new ByteArrayContent(response);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var reply = await _http.PostAsync($"invocation/{requestId}/response", content, cancellationToken).ConfigureAwait(false);
        reply.EnsureSuccessStatusCode();
    }

    public Task ReportErrorAsync(string requestId, Exception error, CancellationToken cancellationToken = default) =>
        PostErrorAsync($"invocation/{requestId}/error", error, cancellationToken);

    public Task ReportInitErrorAsync(Exception error, CancellationToken cancellationToken = default) =>
        PostErrorAsync("init/error", error, cancellationToken);

    private async Task PostErrorAsync(string path, Exception error, CancellationToken cancellationToken)
    {
        var type = error.GetType().Name;
        using var content = new ByteArrayContent(ErrorDocument(type, error.Message));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        request.Headers.Add("Lambda-Runtime-Function-Error-Type", type);
        using var reply = await _http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        reply.EnsureSuccessStatusCode();
    }

    private static byte[] ErrorDocument(string type, string message)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("errorMessage", message);
            json.WriteString("errorType", type);
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Serves events forever: each goes to <paramref name="handler"/>; its exceptions become function errors.</summary>
    public async Task RunAsync(Func<InvocationContext, byte[], Task<byte[]>> handler)
    {
        while (true)
        {
            var (context, body) = await NextAsync().ConfigureAwait(false);
            byte[] response;
            try
            {
                response = await handler(context, body).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                await Console.Error.WriteLineAsync($"{context.RequestId}: {e.GetType().Name}: {e.Message}").ConfigureAwait(false);
                await ReportErrorAsync(context.RequestId, e).ConfigureAwait(false);
                continue;
            }
            await RespondAsync(context.RequestId, response).ConfigureAwait(false);
        }
    }

    public void Dispose() => _http.Dispose();
}
