using System.Diagnostics;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Pool;
using FireSharp.Daemon.Functions.Lambda;
using FireSharp.Proto.Agent;
using Google.Protobuf;

namespace FireSharp.Daemon.Functions;

using StartKind = FireSharp.Pool.StartKind;
using InvokeStatus = FireSharp.Proto.Agent.InvokeStatus;

/// <summary>
/// One function VM of <see cref="AgentFunctionVmFactory"/>: its agent connection serves the invocations, one at a
/// time. The runtime is told the function's ARN (from the factory's <see cref="LambdaIdentity"/>) and a fresh trace id.
/// </summary>
internal sealed class AgentFunctionVm(AgentFunctionVmFactory factory, string functionName, string id, StartKind createdAs, TimeSpan initDuration, AgentClient client) : IFunctionVm
{
    private int _disposed;

    public string Id => id;
    public StartKind CreatedAs => createdAs;
    public TimeSpan InitDuration => initDuration;

    public async Task<VmInvokeOutcome> InvokeAsync(VmInvokeRequest request, CancellationToken cancellationToken)
    {
        var invoke = new Proto.Agent.InvokeRequest
        {
            RequestId = request.RequestId,
            Payload = ByteString.CopyFrom(request.Payload.Span),
            DeadlineUnixMs = (ulong)request.Deadline.ToUnixTimeMilliseconds(),
            InvokedFunctionArn = factory.Identity.FunctionArn(functionName),
            TraceId = LambdaIdentity.NewTraceId(DateTimeOffset.UtcNow),
        };
        // The agent kills the runtime at the deadline; the host gives it a little longer, then treats the VM as lost.
        using var hostDeadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var left = request.Deadline - DateTimeOffset.UtcNow;
        hostDeadline.CancelAfter((left > TimeSpan.Zero ? left : TimeSpan.Zero) + TimeSpan.FromSeconds(3));
        long t0 = Stopwatch.GetTimestamp();
        InvokeReply reply;
        try
        {
            reply = await client.InvokeFunctionAsync(invoke, hostDeadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new VmInvokeOutcome { Status = VmInvokeStatus.Timeout, Unhandled = true, ErrorType = LambdaErrorTypes.Timeout, Duration = Stopwatch.GetElapsedTime(t0) };
        }
        catch (AgentException e)
        {
            return new VmInvokeOutcome { Status = VmInvokeStatus.Crashed, Unhandled = true, ErrorType = LambdaErrorTypes.ExitError, LogTail = e.Message, Duration = Stopwatch.GetElapsedTime(t0) };
        }
        var status = reply.Status switch
        {
            InvokeStatus.Success => VmInvokeStatus.Success,
            InvokeStatus.FunctionError => VmInvokeStatus.FunctionError,
            InvokeStatus.Timeout => VmInvokeStatus.Timeout,
            InvokeStatus.OutOfMemory => VmInvokeStatus.OutOfMemory,
            InvokeStatus.RuntimeExited => VmInvokeStatus.FunctionError, // unhandled: the pool recycles the VM
            _ => VmInvokeStatus.Crashed,
        };
        return new VmInvokeOutcome
        {
            Status = status,
            Payload = reply.Payload.Memory,
            ErrorType = reply.ErrorType.Length > 0 ? reply.ErrorType : reply.Status == InvokeStatus.RuntimeExited ? LambdaErrorTypes.ExitError : null,
            Unhandled = reply.Unhandled || reply.Status is InvokeStatus.RuntimeExited or InvokeStatus.Timeout or InvokeStatus.OutOfMemory,
            LogTail = reply.LogTail,
            Duration = TimeSpan.FromTicks((long)reply.DurationUs * 10),
            MaxMemoryUsedBytes = (long)reply.MaxMemoryKib * 1024,
        };
    }

    public async Task ShutdownAsync(string reason, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await client.ShutdownFunctionAsync(new FunctionShutdownRequest { Reason = ShutdownReason(reason), DeadlineMs = 2000 }, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is AgentException or OperationCanceledException)
        {
            // The VM goes anyway.
        }
        await DisposeAsync().ConfigureAwait(false);
    }

    private static string ShutdownReason(string reason) =>
        reason.Contains("timeout", StringComparison.OrdinalIgnoreCase) ? "timeout"
        : reason.Contains("fail", StringComparison.OrdinalIgnoreCase) || reason.Contains("crash", StringComparison.OrdinalIgnoreCase) ? "failure"
        : "spindown";

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await client.DisposeAsync().ConfigureAwait(false);
        await factory.DestroyAsync(id).ConfigureAwait(false);
    }
}
