using System.Globalization;
using System.Text.Json;
using FireSharp.Pool;
using FireSharp.Daemon.Functions.Lambda;
using static FireSharp.Tests.Pool.PoolTestSupport;

namespace FireSharp.Tests.Pool;

/// <summary>
/// The Lambda surface over the pool's results: status codes, X-Amz-Function-Error, Lambda's error types and JSON
/// error bodies for failures that brought none, ARNs and trace ids. (The pool itself only reports what happened.)
/// </summary>
public class LambdaSurfaceTests
{
    private static (string Type, string Message) ErrorBody(ReadOnlyMemory<byte> payload)
    {
        using var doc = JsonDocument.Parse(payload);
        return (doc.RootElement.GetProperty("errorType").GetString()!, doc.RootElement.GetProperty("errorMessage").GetString()!);
    }

    private static InvokeResult Ran(VmInvokeStatus status, FunctionErrorKind? error, string? errorType = null, byte[]? payload = null) => new()
    {
        RequestId = "req-1",
        Status = InvokeStatus.Ran,
        VmStatus = status,
        FunctionError = error,
        ErrorType = errorType,
        Payload = payload ?? ReadOnlyMemory<byte>.Empty,
        MemoryMib = 256,
        Timeout = TimeSpan.FromSeconds(3),
    };

    [Fact]
    public void StatusCodes_AreLambdas()
    {
        Assert.Equal(200, LambdaInvokeResponse.From(Ran(VmInvokeStatus.Success, null)).StatusCode);
        Assert.Equal(202, LambdaInvokeResponse.From(new InvokeResult { RequestId = "r", Status = InvokeStatus.Queued }).StatusCode);
        Assert.Equal(204, LambdaInvokeResponse.From(new InvokeResult { RequestId = "r", Status = InvokeStatus.Validated }).StatusCode);
    }

    [Fact]
    public void Success_PassesThePayloadThrough()
    {
        var r = LambdaInvokeResponse.From(Ran(VmInvokeStatus.Success, null, payload: Bytes("{\"ok\":1}")));
        Assert.Null(r.FunctionError);
        Assert.Null(r.ErrorType);
        Assert.Equal("{\"ok\":1}", Text(r.Payload));
    }

    [Fact]
    public void HandledError_WithoutBody_GetsLambdasJsonBody_WithTheReportedType()
    {
        var r = LambdaInvokeResponse.From(Ran(VmInvokeStatus.FunctionError, FunctionErrorKind.Handled, "MyError"));
        Assert.Equal("Handled", r.FunctionError);
        Assert.Equal("MyError", r.ErrorType);
        Assert.Equal(("MyError", "the function returned an error"), ErrorBody(r.Payload));

        var untyped = LambdaInvokeResponse.From(Ran(VmInvokeStatus.FunctionError, FunctionErrorKind.Handled));
        Assert.Equal("Error", untyped.ErrorType);
    }

    [Fact]
    public void ErrorBodyFromTheVm_IsKept()
    {
        var body = Bytes("{\"errorType\":\"Custom\",\"errorMessage\":\"mine\"}");
        var r = LambdaInvokeResponse.From(Ran(VmInvokeStatus.FunctionError, FunctionErrorKind.Handled, "Custom", body));
        Assert.Equal(Text(body), Text(r.Payload));
    }

    [Theory]
    [InlineData(VmInvokeStatus.Timeout, "Sandbox.Timedout", "RequestId: req-1 Error: Task timed out after 3.00 seconds")]
    [InlineData(VmInvokeStatus.Crashed, "Runtime.ExitError", "RequestId: req-1 Error: Runtime exited unexpectedly")]
    [InlineData(VmInvokeStatus.OutOfMemory, "Runtime.OutOfMemory", "RequestId: req-1 Error: Runtime exited with error: signal: killed (memory limit 256 MB)")]
    [InlineData(VmInvokeStatus.FunctionError, "Runtime.ExitError", "the function returned an error")]
    public void UnhandledFailure_WithoutType_GetsLambdasTypeAndMessage(VmInvokeStatus status, string errorType, string message)
    {
        var r = LambdaInvokeResponse.From(Ran(status, FunctionErrorKind.Unhandled));
        Assert.Equal(200, r.StatusCode);
        Assert.Equal("Unhandled", r.FunctionError);
        Assert.Equal(errorType, r.ErrorType);
        Assert.Equal((errorType, message), ErrorBody(r.Payload));
    }

    [Fact]
    public void InitError_CarriesItsTypeAndMessage_OrLambdasType()
    {
        var typed = new InvokeResult
        {
            RequestId = "r", Status = InvokeStatus.Ran, FunctionError = FunctionErrorKind.Unhandled, InitFailed = true,
            ErrorType = "Runtime.InitTimeout", ErrorMessage = "took too long",
        };
        Assert.Equal(("Runtime.InitTimeout", "took too long"), ErrorBody(LambdaInvokeResponse.From(typed).Payload));
        var untyped = typed with { ErrorType = null };
        Assert.Equal(("Runtime.InitError", "took too long"), ErrorBody(LambdaInvokeResponse.From(untyped).Payload));
    }

    [Fact]
    public void FunctionArn_HasLambdasShape()
    {
        Assert.Equal("arn:aws:lambda:local:000000000000:function:f", new LambdaIdentity().FunctionArn("f"));
        Assert.Equal("arn:firesharp:lambda:eu-1:123456789012:function:g", new LambdaIdentity("firesharp", "eu-1", "123456789012").FunctionArn("g"));
    }

    [Fact]
    public void TraceId_IsXRays_RootWithEpochSecondsAndRandomPart()
    {
        var now = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var a = LambdaIdentity.NewTraceId(now);
        var b = LambdaIdentity.NewTraceId(now);
        Assert.Matches("^Root=1-[0-9a-f]{8}-[0-9a-f]{24}$", a);
        Assert.Equal(now.ToUnixTimeSeconds(), long.Parse(a[7..15], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        Assert.NotEqual(a, b);
    }
}
