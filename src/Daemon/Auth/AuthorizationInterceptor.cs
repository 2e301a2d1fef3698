using FireSharp.Kvm.Interop;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Auth;

/// <summary>The Unix-socket peer of a connection and its role, set by <see cref="UnixPeerCheck"/> when the connection is accepted.</summary>
public sealed record UnixPeerFeature(PeerCredentials? Peer, ApiRole Role);

/// <summary>
/// Kestrel connection middleware of the Unix socket listener: reads the peer's credentials once per connection
/// and records them with the role they give. A refused peer's connection stays open so that each of its calls can
/// be answered PERMISSION_DENIED with the reason (a connection closed at once would look like an unreachable
/// daemon); it reaches no handler.
/// </summary>
public static class UnixPeerCheck
{
    public static Func<ConnectionDelegate, ConnectionDelegate> Middleware(UnixPeerPolicy policy) => next => connection =>
    {
        var socket = connection.Features.Get<IConnectionSocketFeature>()?.Socket;
        var peer = socket is null ? null : PeerCredentials.Of(socket);
        connection.Features.Set(new UnixPeerFeature(peer, policy.RoleOf(peer)));
        return next(connection);
    };
}

/// <summary>
/// Refuses, with PERMISSION_DENIED naming the role needed, every call whose client lacks the role
/// <see cref="ApiRoles"/> gives the method. The client is the Unix-socket peer (<see cref="UnixPeerFeature"/>) or
/// the TLS client certificate (<see cref="ClientCertificatePolicy.RoleOf"/>); a call that is neither is refused.
/// Registered before every other interceptor, so a refused call reaches no handler.
/// </summary>
public sealed partial class AuthorizationInterceptor(ILogger<AuthorizationInterceptor> logger, ClientCertificatePolicy? certificates = null) : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Authorize(context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Authorize(context);
        return continuation(request, responseStream, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        Authorize(context);
        return continuation(requestStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        var (identity, role) = Authorize(context);
        if (context.Method == ApiRoles.StreamConsoleMethod && role < ApiRoles.ConsoleInputRole && requestStream is IAsyncStreamReader<Proto.V1.ConsoleRequest> console)
            requestStream = (IAsyncStreamReader<TRequest>)(object)new ReadOnlyConsole(console, identity, role);
        return continuation(requestStream, responseStream, context);
    }

    /// <summary>The caller's identity and role; throws PERMISSION_DENIED when the role is short of what the method needs.</summary>
    private (string Identity, ApiRole Role) Authorize(ServerCallContext context)
    {
        var (identity, role) = Identify(context);
        var required = ApiRoles.Required(context.Method);
        if (required is null)
        {
            LogDenied(logger, context.Method, identity, ApiRoles.Name(role), "no role");
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"{context.Method} is not assigned a role: nobody may call it"));
        }
        if (role < required)
        {
            LogDenied(logger, context.Method, identity, ApiRoles.Name(role), ApiRoles.Name(required.Value));
            throw new RpcException(new Status(StatusCode.PermissionDenied,
                $"{context.Method} needs the {ApiRoles.Name(required.Value)} role; {identity} has {(role == ApiRole.None ? "no role" : "the " + ApiRoles.Name(role) + " role")}"));
        }
        return (identity, role);
    }

    private (string Identity, ApiRole Role) Identify(ServerCallContext context)
    {
        var http = context.GetHttpContext();
        if (http.Features.Get<UnixPeerFeature>() is { } unix)
            return ("Unix socket peer " + UnixPeerPolicy.Describe(unix.Peer), unix.Role);
        if (http.Connection.ClientCertificate is { } cert && certificates is not null)
        {
            var (name, role) = certificates.RoleOf(cert);
            return ($"client '{name}'", role);
        }
        return ("an unidentified client", ApiRole.None);
    }

    /// <summary>StreamConsole for a client that may read but not type: a message carrying input ends the call with PERMISSION_DENIED.</summary>
    private sealed class ReadOnlyConsole(IAsyncStreamReader<Proto.V1.ConsoleRequest> inner, string identity, ApiRole role) : IAsyncStreamReader<Proto.V1.ConsoleRequest>
    {
        public Proto.V1.ConsoleRequest Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            bool more = await inner.MoveNext(cancellationToken).ConfigureAwait(false);
            if (more && !inner.Current.Input.IsEmpty)
                throw new RpcException(new Status(StatusCode.PermissionDenied,
                    $"console input needs the {ApiRoles.Name(ApiRoles.ConsoleInputRole)} role; {identity} has the {ApiRoles.Name(role)} role"));
            return more;
        }
    }

    [LoggerMessage(300, LogLevel.Warning, "denied {Method} to {Identity} (role {Role}, needs {Required})")]
    private static partial void LogDenied(ILogger logger, string method, string identity, string role, string required);
}
