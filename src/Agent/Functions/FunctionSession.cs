using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Functions;

/// <summary>One event handed to the runtime, and how it was answered.</summary>
internal sealed class Invocation(InvokeRequest request)
{
    public InvokeRequest Request { get; } = request;
    public TaskCompletionSource<InvocationAnswer> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    /// <summary>Stopwatch timestamp of when the runtime received it (0 before).</summary>
    public long DeliveredAt { get; set; }
    /// <summary>Stopwatch timestamp of the runtime's answer (/response or /error; 0 before).</summary>
    public long AnsweredAt { get; private set; }

    /// <summary>The runtime's answer: the first one counts.</summary>
    public void Complete(InvocationAnswer answer)
    {
        if (Answer.Task.IsCompleted) return;
        AnsweredAt = Stopwatch.GetTimestamp(); // before the waiter can see the answer
        Answer.TrySetResult(answer);
    }
}

internal sealed record InvocationAnswer(InvokeStatus Status, byte[] Payload, string ErrorType, bool Unhandled);

/// <summary>An extension that registered with /extension/register.</summary>
internal sealed class RegisteredExtension(string id, string name, bool invoke, bool shutdown)
{
    public string Id { get; } = id;
    public string Name { get; } = name;
    public bool WantsInvoke { get; } = invoke;
    public bool WantsShutdown { get; } = shutdown;
    public Channel<byte[]> Events { get; } = Channel.CreateUnbounded<byte[]>();
    /// <summary>Set when it first called /extension/event/next (its init is done).</summary>
    public volatile bool Ready;
    public volatile bool ShutdownSent;
}

/// <summary>An answer of the Runtime/Extensions API: HTTP status, JSON body, extra headers.</summary>
internal readonly record struct ApiAnswer(int Status, byte[] Body, string? HeaderName = null, string? HeaderValue = null)
{
    public static ApiAnswer Accepted { get; } = new(202, JsonSerializer.SerializeToUtf8Bytes(new StatusDocument("OK"), FunctionJson.Default.StatusDocument));
    public static ApiAnswer Error(int status, string type, string message) => new(status, FunctionJson.Error(type, message));
}

/// <summary>
/// The state of one initialized (or initializing) function: its runtime and extension processes,
/// the invocation in flight, the registered extensions. The Runtime API server calls the
/// <c>On*</c> methods; <see cref="FunctionHost"/> drives init, invoke and shutdown.
/// </summary>
internal sealed class FunctionSession
{
    /// <summary>
    /// The largest response or error document a runtime may post: Lambda's 6 MB, but here also what
    /// fits in one agent frame (8 MiB) with room for the rest of the reply (64 KiB).
    /// </summary>
    public const int MaxResponseBytes = LambdaMaxResponseBytes < FrameRoom ? LambdaMaxResponseBytes : FrameRoom;
    private const int LambdaMaxResponseBytes = 6 * 1024 * 1024;
    private const int FrameRoom = FireSharp.Agent.Protocol.AgentProtocol.MaxFrameBytes - (64 << 10);

    private readonly object _gate = new();
    private readonly Channel<Invocation> _next = Channel.CreateUnbounded<Invocation>();
    private readonly ConcurrentDictionary<string, RegisteredExtension> _extensions = new();
    private readonly HashSet<string> _answered = new(StringComparer.Ordinal);
    private readonly Queue<string> _answeredOrder = new();
    private readonly TaskCompletionSource _initDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<(string Type, string Message)> _initFailed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Invocation? _current;
    private bool _runtimeCalledNext;
    private volatile bool _initializing = true;

    public FunctionSession(FunctionInitRequest config)
    {
        Config = config;
    }

    public FunctionInitRequest Config { get; }
    public LogTail Tail { get; } = new();
    public RuntimeProcess? Runtime { get; set; }
    public List<RuntimeProcess> ExtensionProcesses { get; } = [];
    public IReadOnlyCollection<RegisteredExtension> Extensions => _extensions.Values.ToArray();
    public bool Initializing => _initializing;

    /// <summary>Completes when the runtime and every registered extension have asked for their first event.</summary>
    public Task InitDone => _initDone.Task;

    /// <summary>Completes when the runtime (/runtime/init/error) or an extension (/extension/init/error) reported an init failure.</summary>
    public Task<(string Type, string Message)> InitFailed => _initFailed.Task;

    public void EndInit() => _initializing = false;

    /// <summary>Registers the in-flight invocation and hands it to the runtime and to the INVOKE extensions.</summary>
    public void Begin(Invocation invocation)
    {
        var r = invocation.Request;
        lock (_gate)
        {
            _current = invocation;
            Remember(r.RequestId);
        }
        var invokeEvent = JsonSerializer.SerializeToUtf8Bytes(new ExtensionEvent
        {
            EventType = "INVOKE",
            DeadlineMs = (long)r.DeadlineUnixMs,
            RequestId = r.RequestId,
            InvokedFunctionArn = r.InvokedFunctionArn,
            Tracing = new TracingDocument("X-Amzn-Trace-Id", r.TraceId),
        }, FunctionJson.Default.ExtensionEvent);
        foreach (var e in _extensions.Values)
            if (e.WantsInvoke) e.Events.Writer.TryWrite(invokeEvent);
        _next.Writer.TryWrite(invocation);
    }

    /// <summary>The invocation is over (answered, timed out, ...): later answers for it are refused.</summary>
    public void End(Invocation invocation)
    {
        lock (_gate)
        {
            if (_current == invocation) _current = null;
        }
        // An invocation the runtime never picked up must not reach it later.
        while (_next.Reader.TryPeek(out var queued) && queued == invocation) _next.Reader.TryRead(out _);
    }

    public bool WasUsed(string requestId)
    {
        lock (_gate) return _answered.Contains(requestId);
    }

    private void Remember(string requestId)
    {
        if (!_answered.Add(requestId)) return;
        _answeredOrder.Enqueue(requestId);
        if (_answeredOrder.Count > 4096) _answered.Remove(_answeredOrder.Dequeue());
    }

    /// <summary>Sends SHUTDOWN to the extensions that registered for it.</summary>
    public void SendShutdown(string reason, long deadlineUnixMs)
    {
        var shutdownEvent = JsonSerializer.SerializeToUtf8Bytes(new ExtensionEvent
        {
            EventType = "SHUTDOWN",
            DeadlineMs = deadlineUnixMs,
            ShutdownReason = reason,
        }, FunctionJson.Default.ExtensionEvent);
        foreach (var e in _extensions.Values)
        {
            if (!e.WantsShutdown) continue;
            e.ShutdownSent = true;
            e.Events.Writer.TryWrite(shutdownEvent);
        }
        _initFailed.TrySetResult(("Sandbox.Shutdown", "the function is shutting down"));
    }

    private void CheckInitDone()
    {
        if (!_runtimeCalledNext) return;
        foreach (var e in _extensions.Values)
            if (!e.Ready) return;
        _initDone.TrySetResult();
    }

    // ---- Runtime API (2018-06-01) ----

    /// <summary>GET /runtime/invocation/next: waits for the next event.</summary>
    public async Task<Invocation> OnNextAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _runtimeCalledNext = true;
        }
        CheckInitDone();
        while (true)
        {
            var invocation = await _next.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            lock (_gate)
            {
                // Skip events that ended while queued (timed out before the runtime asked).
                if (_current != invocation || invocation.Answer.Task.IsCompleted) continue;
                if (cancellationToken.IsCancellationRequested)
                {
                    // The runtime went away as the event arrived: keep it for its next request.
                    _next.Writer.TryWrite(invocation);
                    cancellationToken.ThrowIfCancellationRequested();
                }
                invocation.DeliveredAt = Stopwatch.GetTimestamp();
                return invocation;
            }
        }
    }

    /// <summary>POST /runtime/invocation/{id}/response (body null: larger than <see cref="MaxResponseBytes"/>).</summary>
    public ApiAnswer OnResponse(string requestId, byte[]? body)
    {
        var invocation = Find(requestId, out var refusal);
        if (invocation is null) return refusal;
        if (body is null)
        {
            var message = $"Response payload size exceeded maximum allowed payload size ({MaxResponseBytes} bytes).";
            invocation.Complete(new InvocationAnswer(InvokeStatus.FunctionError,
                FunctionJson.Error("Function.ResponseSizeTooLarge", message), "Function.ResponseSizeTooLarge", false));
            return ApiAnswer.Error(413, "RequestEntityTooLarge", message);
        }
        invocation.Complete(new InvocationAnswer(InvokeStatus.Success, body, "", false));
        return ApiAnswer.Accepted;
    }

    /// <summary>POST /runtime/invocation/{id}/error.</summary>
    public ApiAnswer OnError(string requestId, string? errorTypeHeader, byte[]? body)
    {
        var invocation = Find(requestId, out var refusal);
        if (invocation is null) return refusal;
        if (body is null)
        {
            invocation.Complete(new InvocationAnswer(InvokeStatus.FunctionError,
                FunctionJson.Error("Function.ResponseSizeTooLarge", "error document too large"), "Function.ResponseSizeTooLarge", false));
            return ApiAnswer.Error(413, "RequestEntityTooLarge", $"the error document is larger than {MaxResponseBytes} bytes");
        }
        string type = NonEmpty(errorTypeHeader) ?? FunctionJson.ErrorTypeOf(body) ?? "Unhandled";
        if (body.Length == 0) body = FunctionJson.Error(type, "");
        invocation.Complete(new InvocationAnswer(InvokeStatus.FunctionError, body, type, false));
        return ApiAnswer.Accepted;
    }

    /// <summary>POST /runtime/init/error.</summary>
    public ApiAnswer OnInitError(string? errorTypeHeader, byte[] body)
    {
        if (!_initializing)
            return ApiAnswer.Error(403, "InvalidStateTransition", "/runtime/init/error is only valid during init");
        string type = NonEmpty(errorTypeHeader) ?? FunctionJson.ErrorTypeOf(body) ?? "Runtime.InitError";
        _initFailed.TrySetResult((type, MessageOf(body)));
        return ApiAnswer.Accepted;
    }

    private Invocation? Find(string requestId, out ApiAnswer refusal)
    {
        lock (_gate)
        {
            if (_current is { } c && c.Request.RequestId == requestId && c.DeliveredAt != 0 && !c.Answer.Task.IsCompleted)
            {
                refusal = default;
                return c;
            }
            refusal = _answered.Contains(requestId)
                ? ApiAnswer.Error(403, "InvalidStateTransition", $"invocation {requestId} was already answered or is over")
                : ApiAnswer.Error(400, "InvalidRequestID", $"no invocation with request id '{requestId}' is in progress");
            return null;
        }
    }

    // ---- Extensions API (2020-01-01) ----

    /// <summary>POST /extension/register.</summary>
    public ApiAnswer OnRegister(string? name, byte[] body)
    {
        if (NonEmpty(name) is null)
            return ApiAnswer.Error(400, "InvalidRequest", "the Lambda-Extension-Name header is missing");
        if (!_initializing)
            return ApiAnswer.Error(403, "InvalidStateTransition", "extensions can only register during init");
        string[] events;
        try
        {
            events = JsonSerializer.Deserialize(body, FunctionJson.Default.RegisterRequest)?.Events ?? [];
        }
        catch (JsonException e)
        {
            return ApiAnswer.Error(400, "InvalidRequest", "the body is not {\"events\": [...]}: " + e.Message);
        }
        if (events.FirstOrDefault(e => e is not ("INVOKE" or "SHUTDOWN")) is { } bad)
            return ApiAnswer.Error(400, "InvalidEventType", $"unknown event type '{bad}' (INVOKE, SHUTDOWN)");
        if (_extensions.Values.Any(e => e.Name == name))
            return ApiAnswer.Error(409, "ExtensionAlreadyRegistered", $"extension '{name}' is registered already");
        var id = Guid.NewGuid().ToString();
        _extensions[id] = new RegisteredExtension(id, name!, events.Contains("INVOKE"), events.Contains("SHUTDOWN"));
        var reply = JsonSerializer.SerializeToUtf8Bytes(new RegisterResponse(Config.FunctionName, Config.FunctionVersion, Config.Handler), FunctionJson.Default.RegisterResponse);
        return new ApiAnswer(200, reply, "Lambda-Extension-Identifier", id);
    }

    public RegisteredExtension? FindExtension(string? id) =>
        id is not null && _extensions.TryGetValue(id, out var e) ? e : null;

    /// <summary>GET /extension/event/next: waits for the extension's next event.</summary>
    public async Task<byte[]> OnEventNextAsync(RegisteredExtension extension, CancellationToken cancellationToken)
    {
        extension.Ready = true;
        CheckInitDone();
        return await extension.Events.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>POST /extension/init/error.</summary>
    public ApiAnswer OnExtensionInitError(RegisteredExtension extension, string? errorTypeHeader, byte[] body)
    {
        if (!_initializing)
            return ApiAnswer.Error(403, "InvalidStateTransition", "/extension/init/error is only valid during init");
        string type = NonEmpty(errorTypeHeader) ?? "Extension.InitError";
        _initFailed.TrySetResult((type, $"extension {extension.Name}: {MessageOf(body)}"));
        return ApiAnswer.Accepted;
    }

    /// <summary>POST /extension/exit/error: noted in the log.</summary>
    public static ApiAnswer OnExtensionExitError(RegisteredExtension extension, string? errorTypeHeader, byte[] body)
    {
        FireSharp.Agent.Log.Info($"extension {extension.Name} exit error {errorTypeHeader}: {MessageOf(body)}");
        return ApiAnswer.Accepted;
    }

    private static string? NonEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();

    private static string MessageOf(byte[] body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var doc = JsonDocument.ParseValue(ref reader);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("errorMessage", out var m) && m.ValueKind == JsonValueKind.String)
                return m.GetString() ?? "";
        }
        catch (JsonException) { }
        var text = System.Text.Encoding.UTF8.GetString(body);
        return text.Length > 1024 ? text[..1024] : text;
    }
}
