using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon;

/// <summary>
/// The one place where failures become gRPC statuses. Handlers throw <see cref="VmApiException"/>; this
/// maps its kind to a status code, puts the field at fault in the <c>firesharp-field</c> trailer, and turns
/// cancellation into DeadlineExceeded (the call's deadline passed) or Cancelled (the client went away).
/// Anything else is a bug: it is logged and reported as Internal, never as Unknown.
/// </summary>
public sealed partial class ErrorInterceptor(ILogger<ErrorInterceptor> logger) : Interceptor
{
    public const string FieldTrailer = "firesharp-field";

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request,
        ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw Map(e, context);
        }
    }

    /// <summary>The status code for an error kind.</summary>
    public static StatusCode CodeOf(VmErrorKind kind) => kind switch
    {
        VmErrorKind.InvalidArgument => StatusCode.InvalidArgument,
        VmErrorKind.NotFound => StatusCode.NotFound,
        VmErrorKind.AlreadyExists => StatusCode.AlreadyExists,
        VmErrorKind.WrongState => StatusCode.FailedPrecondition,
        VmErrorKind.ResourceExhausted => StatusCode.ResourceExhausted,
        VmErrorKind.Unimplemented => StatusCode.Unimplemented,
        VmErrorKind.Unavailable => StatusCode.Unavailable,
        VmErrorKind.Timeout => StatusCode.DeadlineExceeded,
        VmErrorKind.PermissionDenied => StatusCode.PermissionDenied,
        _ => StatusCode.Internal,
    };

    private RpcException Map(Exception e, ServerCallContext context)
    {
        switch (e)
        {
            case FireSharp.Snapshot.SnapshotException snapshot:
                return Map(SnapshotErrors.ToApi(snapshot), context);
            case VmApiException api:
            {
                var trailers = new Metadata();
                if (api.Field is not null) trailers.Add(FieldTrailer, api.Field);
                var code = CodeOf(api.Kind);
                LogApiError(logger, context.Method, code, api.Message);
                return new RpcException(new Status(code, api.Message), trailers);
            }
            case OperationCanceledException when context.Deadline <= DateTime.UtcNow:
                return new RpcException(new Status(StatusCode.DeadlineExceeded, "the call's deadline passed"));
            case OperationCanceledException when context.CancellationToken.IsCancellationRequested:
                return new RpcException(new Status(StatusCode.Cancelled, "the call was cancelled"));
            default:
                string type = e.GetType().Name;
                LogUnexpected(logger, e, context.Method, type);
                return new RpcException(new Status(StatusCode.Internal, $"internal error ({type}): {e.Message}"));
        }
    }

    [LoggerMessage(200, LogLevel.Debug, "{Method}: {Code} {Message}")]
    private static partial void LogApiError(ILogger logger, string method, StatusCode code, string message);

    [LoggerMessage(201, LogLevel.Error, "{Method} failed with an unexpected {Type} (a bug)")]
    private static partial void LogUnexpected(ILogger logger, Exception exception, string method, string type);
}
