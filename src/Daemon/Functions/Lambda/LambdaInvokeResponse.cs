using System.Buffers;
using System.Globalization;
using System.Text.Json;

using FireSharp.Pool;

namespace FireSharp.Daemon.Functions.Lambda;

/// <summary>
/// A pool result as Lambda's Invoke answers it: the status code (200 ran, 202 queued, 204 validated), the
/// X-Amz-Function-Error value ("Handled" or "Unhandled"), the error type (the one reported, else Lambda's for what
/// happened) and, for a failure that brought no body, Lambda's JSON error body <c>{"errorType","errorMessage"}</c>.
/// </summary>
public sealed record LambdaInvokeResponse
{
    public required int StatusCode { get; init; }
    /// <summary>The function's response, or for an error its body (Lambda's JSON when the VM gave none).</summary>
    public ReadOnlyMemory<byte> Payload { get; init; }
    /// <summary>null on success, else "Handled" or "Unhandled".</summary>
    public string? FunctionError { get; init; }
    public string? ErrorType { get; init; }

    public static LambdaInvokeResponse From(InvokeResult r)
    {
        ArgumentNullException.ThrowIfNull(r);
        int status = r.Status switch
        {
            InvokeStatus.Ran => 200,
            InvokeStatus.Queued => 202,
            InvokeStatus.Validated => 204,
            _ => throw new ArgumentOutOfRangeException(nameof(r), r.Status, "unknown invoke status"),
        };
        if (r.FunctionError is not { } error)
            return new LambdaInvokeResponse { StatusCode = status, Payload = r.Payload };

        string errorType = r.ErrorType ?? DefaultErrorType(r, error);
        return new LambdaInvokeResponse
        {
            StatusCode = status,
            Payload = r.Payload.IsEmpty ? ErrorBody(errorType, DefaultMessage(r)) : r.Payload,
            FunctionError = error == FunctionErrorKind.Handled ? "Handled" : "Unhandled",
            ErrorType = errorType,
        };
    }

    /// <summary>Lambda's error type for a failure whose VM named none.</summary>
    private static string DefaultErrorType(InvokeResult r, FunctionErrorKind error) =>
        r.InitFailed ? LambdaErrorTypes.InitError
        : r.VmStatus switch
        {
            VmInvokeStatus.FunctionError => error == FunctionErrorKind.Handled ? LambdaErrorTypes.HandledDefault : LambdaErrorTypes.ExitError,
            VmInvokeStatus.Timeout => LambdaErrorTypes.Timeout,
            VmInvokeStatus.OutOfMemory => LambdaErrorTypes.OutOfMemory,
            _ => LambdaErrorTypes.ExitError,
        };

    /// <summary>Lambda's errorMessage for a failure that brought no body.</summary>
    private static string DefaultMessage(InvokeResult r) =>
        r.InitFailed ? r.ErrorMessage ?? "the runtime failed to initialize"
        : r.VmStatus switch
        {
            VmInvokeStatus.FunctionError => "the function returned an error",
            VmInvokeStatus.Timeout => string.Create(CultureInfo.InvariantCulture,
                $"RequestId: {r.RequestId} Error: Task timed out after {r.Timeout.TotalSeconds:0.00} seconds"),
            VmInvokeStatus.OutOfMemory => string.Create(CultureInfo.InvariantCulture,
                $"RequestId: {r.RequestId} Error: Runtime exited with error: signal: killed (memory limit {r.MemoryMib} MB)"),
            _ => $"RequestId: {r.RequestId} Error: Runtime exited unexpectedly",
        };

    /// <summary>Lambda's error body: <c>{"errorType":..,"errorMessage":..}</c>.</summary>
    public static ReadOnlyMemory<byte> ErrorBody(string errorType, string message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("errorType", errorType);
            w.WriteString("errorMessage", message);
            w.WriteEndObject();
        }
        return buffer.WrittenMemory;
    }
}

/// <summary>The error types Lambda reports for failures the runtime did not name.</summary>
public static class LambdaErrorTypes
{
    /// <summary>The runtime failed to initialize.</summary>
    public const string InitError = "Runtime.InitError";
    /// <summary>The runtime exited or the VM crashed during the invocation.</summary>
    public const string ExitError = "Runtime.ExitError";
    /// <summary>The runtime was killed for using more than the function's memory.</summary>
    public const string OutOfMemory = "Runtime.OutOfMemory";
    /// <summary>The invocation ran past the function's timeout.</summary>
    public const string Timeout = "Sandbox.Timedout";
    /// <summary>The handler reported an error without a type.</summary>
    public const string HandledDefault = "Error";
}
