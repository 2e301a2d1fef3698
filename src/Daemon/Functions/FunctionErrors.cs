using FireSharp.Pool;
using Grpc.Core;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// The pool's typed errors as API errors: <see cref="VmApiException"/> for the <see cref="ErrorInterceptor"/>
/// (status code plus the <c>firesharp-field</c> trailer), and for a throttle an <see cref="RpcException"/>
/// carrying the <c>retry-after</c> trailer (seconds, like HTTP's Retry-After on Lambda's 429).
/// </summary>
public static class FunctionErrors
{
    /// <summary>Trailer on a throttled Invoke: whole seconds to wait before trying again.</summary>
    public const string RetryAfterTrailer = "retry-after";

    /// <summary>Trailer on a throttled Invoke: which limit was reached (ReservedConcurrency, AccountConcurrency, ...).</summary>
    public const string ThrottleReasonTrailer = "firesharp-throttle-reason";

    public static VmApiException NotFound(string name, string field = "name") =>
        new(VmErrorKind.NotFound, field, $"no function named '{name}'");

    public static Exception From(FunctionPoolException e, string nameField = "name") => e switch
    {
        FunctionNotFoundException nf => NotFound(nf.FunctionName, nameField),
        FunctionDeletingException d => VmApiException.WrongState($"function '{d.FunctionName}' is being deleted (ResourceConflictException)"),
        FunctionExistsException x => new VmApiException(VmErrorKind.AlreadyExists, nameField, $"a function named '{x.FunctionName}' exists"),
        RequestTooLargeException big => VmApiException.Exhausted("payload", $"{big.Message} (RequestTooLargeException)"),
        InvalidFunctionRequestException bad => VmApiException.Invalid(FieldOf(bad.Field), bad.Message),
        FunctionThrottledException t => Throttled(t),
        _ => VmApiException.Invalid(nameField, e.Message),
    };

    public static RpcException Throttled(FunctionThrottledException t)
    {
        int seconds = Math.Max(1, (int)Math.Ceiling(t.RetryAfter.TotalSeconds));
        var trailers = new Metadata
        {
            { RetryAfterTrailer, seconds.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            { ThrottleReasonTrailer, t.Reason.ToString() },
        };
        return new RpcException(new Status(StatusCode.ResourceExhausted, $"{t.Message} (TooManyRequestsException); retry after {seconds} s"), trailers);
    }

    /// <summary>The pool names fields by property (MemoryMib); the API by proto path.</summary>
    private static string FieldOf(string poolField) => poolField switch
    {
        "ReservedConcurrency" or "ReservedConcurrentExecutions" => "reserved_concurrent_executions",
        "ProvisionedConcurrency" or "ProvisionedConcurrentExecutions" => "provisioned_concurrent_executions",
        "MemoryMib" => "spec.memory_mib",
        "Vcpus" => "spec.vcpus",
        "Timeout" => "spec.timeout_seconds",
        "Handler" => "spec.handler",
        "Name" => "name",
        "LayerPaths" => "spec.layers",
        "Payload" => "payload",
        "InvocationType" => "invocation_type",
        _ => poolField,
    };
}
