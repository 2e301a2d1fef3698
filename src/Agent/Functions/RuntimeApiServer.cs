using System.Buffers;
using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace FireSharp.Agent.Functions;

/// <summary>
/// The Lambda Runtime API (2018-06-01) and Extensions API (2020-01-01) on 127.0.0.1:port:
/// Kestrel (WebApplication.CreateSlimBuilder) with minimal-API routes, serving whichever
/// <see cref="FunctionSession"/> is current. Malformed HTTP is answered 400 by Kestrel itself.
/// </summary>
internal sealed class RuntimeApiServer : IAsyncDisposable
{
    private const string Runtime = "/2018-06-01/runtime";
    private const string Extension = "/2020-01-01/extension";
    private readonly WebApplication _app;
    private readonly Func<FunctionSession?> _session;

    private RuntimeApiServer(WebApplication app, int port, Func<FunctionSession?> session)
    {
        _app = app;
        Port = port;
        _session = session;
    }

    public int Port { get; }

    /// <summary>Starts serving; throws <see cref="IOException"/> if the port cannot be bound.</summary>
    public static async Task<RuntimeApiServer> StartAsync(int port, Func<FunctionSession?> session)
    {
        // The empty builder (the slim builder minus configuration sources, logging providers and
        // the console lifetime): Kestrel, routing and nothing else.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.Services.AddRoutingCore();
        // The agent handles SIGTERM/SIGINT itself (as PID 1 it forwards them): no console lifetime.
        builder.Services.AddSingleton<IHostLifetime, QuietLifetime>();
        builder.WebHost.ConfigureKestrel(o =>
        {
            o.AddServerHeader = false;
            o.Limits.MaxRequestBodySize = null; // read with our own limit (413 + Function.ResponseSizeTooLarge)
            o.Listen(IPAddress.Loopback, port);
        });
        var app = builder.Build();
        var server = new RuntimeApiServer(app, port, session);
        server.Map(app);
        try
        {
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException($"the Runtime API cannot listen on 127.0.0.1:{port}: {e.Message}", e);
        }
        return server;
    }

    private void Map(WebApplication app)
    {
        app.MapGet(Runtime + "/invocation/next", NextAsync);
        app.MapPost(Runtime + "/invocation/{id}/response", c => WithSession(c, async s =>
            s.OnResponse(RequestId(c), await ReadBodyAsync(c).ConfigureAwait(false))));
        app.MapPost(Runtime + "/invocation/{id}/error", c => WithSession(c, async s =>
            s.OnError(RequestId(c), Header(c, "Lambda-Runtime-Function-Error-Type"), await ReadBodyAsync(c).ConfigureAwait(false))));
        app.MapPost(Runtime + "/init/error", c => WithSession(c, async s =>
            s.OnInitError(Header(c, "Lambda-Runtime-Function-Error-Type"), await ReadBodyAsync(c).ConfigureAwait(false) ?? [])));

        app.MapPost(Extension + "/register", c => WithSession(c, async s =>
            s.OnRegister(Header(c, "Lambda-Extension-Name"), await ReadBodyAsync(c).ConfigureAwait(false) ?? [])));
        app.MapGet(Extension + "/event/next", EventNextAsync);
        app.MapPost(Extension + "/init/error", c => WithExtension(c, async (s, e) =>
            s.OnExtensionInitError(e, Header(c, "Lambda-Extension-Function-Error-Type"), await ReadBodyAsync(c).ConfigureAwait(false) ?? [])));
        app.MapPost(Extension + "/exit/error", c => WithExtension(c, async (_, e) =>
            FunctionSession.OnExtensionExitError(e, Header(c, "Lambda-Extension-Function-Error-Type"), await ReadBodyAsync(c).ConfigureAwait(false) ?? [])));
    }

    private static string RequestId(HttpContext c) => c.Request.RouteValues["id"] as string ?? "";

    private static string? Header(HttpContext c, string name) =>
        c.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;

    private async Task WithSession(HttpContext c, Func<FunctionSession, Task<ApiAnswer>> handle)
    {
        var session = _session();
        var answer = session is null
            ? ApiAnswer.Error(403, "InvalidStateTransition", "no function is running")
            : await handle(session).ConfigureAwait(false);
        await WriteAsync(c, answer).ConfigureAwait(false);
    }

    private Task WithExtension(HttpContext c, Func<FunctionSession, RegisteredExtension, Task<ApiAnswer>> handle) =>
        WithSession(c, s => s.FindExtension(Header(c, "Lambda-Extension-Identifier")) is { } e
            ? handle(s, e)
            : Task.FromResult(ApiAnswer.Error(403, "Extension.UnknownExtensionIdentifier", "unknown or missing Lambda-Extension-Identifier")));

    private async Task NextAsync(HttpContext c)
    {
        var session = _session();
        if (session is null)
        {
            await WriteAsync(c, ApiAnswer.Error(403, "InvalidStateTransition", "no function is running")).ConfigureAwait(false);
            return;
        }
        Invocation invocation;
        try
        {
            invocation = await session.OnNextAsync(c.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return; // the runtime went away (or the server stops)
        }
        var r = invocation.Request;
        var h = c.Response.Headers;
        h["Lambda-Runtime-Aws-Request-Id"] = r.RequestId;
        h["Lambda-Runtime-Deadline-Ms"] = r.DeadlineUnixMs.ToString(CultureInfo.InvariantCulture);
        h["Lambda-Runtime-Invoked-Function-Arn"] = r.InvokedFunctionArn;
        if (r.TraceId.Length > 0) h["Lambda-Runtime-Trace-Id"] = r.TraceId;
        if (r.Traceparent.Length > 0) h["traceparent"] = r.Traceparent; // the host's span (W3C trace context)
        if (r.ClientContext.Length > 0) h["Lambda-Runtime-Client-Context"] = r.ClientContext;
        if (r.CognitoIdentity.Length > 0) h["Lambda-Runtime-Cognito-Identity"] = r.CognitoIdentity;
        c.Response.StatusCode = 200;
        c.Response.ContentType = "application/json";
        c.Response.ContentLength = r.Payload.Length;
        await c.Response.Body.WriteAsync(r.Payload.Memory).ConfigureAwait(false);
    }

    private async Task EventNextAsync(HttpContext c)
    {
        var session = _session();
        var extension = session?.FindExtension(Header(c, "Lambda-Extension-Identifier"));
        if (session is null || extension is null)
        {
            await WriteAsync(c, ApiAnswer.Error(403, "Extension.UnknownExtensionIdentifier", "unknown or missing Lambda-Extension-Identifier")).ConfigureAwait(false);
            return;
        }
        byte[] body;
        try
        {
            body = await session.OnEventNextAsync(extension, c.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        c.Response.Headers["Lambda-Extension-Event-Identifier"] = Guid.NewGuid().ToString();
        await WriteAsync(c, new ApiAnswer(200, body)).ConfigureAwait(false);
    }

    private static async Task WriteAsync(HttpContext c, ApiAnswer answer)
    {
        c.Response.StatusCode = answer.Status;
        if (answer.HeaderName is not null) c.Response.Headers[answer.HeaderName] = answer.HeaderValue;
        c.Response.ContentType = "application/json";
        c.Response.ContentLength = answer.Body.Length;
        await c.Response.Body.WriteAsync(answer.Body).ConfigureAwait(false);
    }

    /// <summary>The request body, or null if it is larger than <see cref="FunctionSession.MaxResponseBytes"/>.</summary>
    private static async Task<byte[]?> ReadBodyAsync(HttpContext c)
    {
        if (c.Request.ContentLength > FunctionSession.MaxResponseBytes) return null;
        var buffer = new ArrayBufferWriter<byte>((int)Math.Min(c.Request.ContentLength ?? 4096, FunctionSession.MaxResponseBytes) + 1);
        while (true)
        {
            var memory = buffer.GetMemory(16 << 10);
            int n = await c.Request.Body.ReadAsync(memory, c.RequestAborted).ConfigureAwait(false);
            if (n == 0) break;
            buffer.Advance(n);
            if (buffer.WrittenCount > FunctionSession.MaxResponseBytes) return null;
        }
        return buffer.WrittenSpan.ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try { await _app.StopAsync(timeout.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class QuietLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
