using System.Diagnostics;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Http;

namespace FireSharp.Daemon.Tracing;

/// <summary>
/// The root of every unary call's span tree: a server span named "<c>service/method</c>" from the call's arrival
/// (this interceptor runs first) until its response has been sent (ASP.NET Core's <c>OnCompleted</c>), with a
/// "send response" child from the handler's return to that point. A <c>traceparent</c> (and <c>tracestate</c>) request
/// header makes it the child of the client's span; otherwise it starts a trace. ASP.NET Core's own request activity is
/// not its parent: nothing exports it. Streaming calls (events, the console) get no span: they last as long as the
/// client wants.
/// </summary>
public sealed class TracingInterceptor : Interceptor
{
    public const string TraceparentHeader = "traceparent";
    public const string TracestateHeader = "tracestate";

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request,
        ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(continuation);
        if (!DaemonTracing.Source.HasListeners()) return await continuation(request, context).ConfigureAwait(false);

        Activity.Current = null; // ASP.NET Core's request activity: not exported, so not a parent
        string method = context.Method.TrimStart('/');
        var server = DaemonTracing.Source.StartActivity(method, ActivityKind.Server, RemoteParent(context.RequestHeaders));
        if (server is null) return await continuation(request, context).ConfigureAwait(false);
        int slash = method.IndexOf('/', StringComparison.Ordinal);
        server.SetTag("rpc.system", "grpc");
        server.SetTag("rpc.service", slash > 0 ? method[..slash] : method);
        server.SetTag("rpc.method", slash > 0 ? method[(slash + 1)..] : method);
        try
        {
            var response = await continuation(request, context).ConfigureAwait(false);
            server.SetTag("rpc.grpc.status_code", (int)StatusCode.OK);
            EndWhenSent(server, context);
            return response;
        }
        catch (RpcException e)
        {
            server.SetTag("rpc.grpc.status_code", (int)e.StatusCode);
            server.SetStatus(ActivityStatusCode.Error, e.Status.Detail);
            server.Stop();
            throw;
        }
        catch (Exception e)
        {
            DaemonTracing.Fail(server, e);
            server.Stop();
            throw;
        }
    }

    /// <summary>The client's span from the call's <c>traceparent</c>/<c>tracestate</c> headers; default (a new trace) for none or a malformed one.</summary>
    public static ActivityContext RemoteParent(Metadata headers)
    {
        ArgumentNullException.ThrowIfNull(headers);
        string? parent = headers.GetValue(TraceparentHeader);
        return parent is not null && ActivityContext.TryParse(parent, headers.GetValue(TracestateHeader), isRemote: true, out var context)
            ? context : default;
    }

    /// <summary>Ends <paramref name="server"/> once the response is out ("send response" covers the wait); at once without an HTTP context.</summary>
    private static void EndWhenSent(Activity server, ServerCallContext context)
    {
        HttpContext? http;
        try { http = context.GetHttpContext(); }
        catch (InvalidOperationException) { http = null; }
        if (http is null)
        {
            server.Stop();
            return;
        }
        var send = DaemonTracing.Source.StartActivity(DaemonTracing.ResponseSpan, ActivityKind.Internal, server.Context);
        http.Response.OnCompleted(() =>
        {
            send?.Stop();
            server.Stop();
            return Task.CompletedTask;
        });
    }
}
