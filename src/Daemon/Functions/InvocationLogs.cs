using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;
using FireSharp.Pool;

namespace FireSharp.Daemon.Functions;

/// <summary>One invocation's log as Lambda writes it (<see cref="LambdaLogFormat"/>).</summary>
public sealed record InvocationLog(string FunctionName, string RequestId, DateTimeOffset Time, string Text);

/// <summary>
/// The recent invocations' logs of each function (<c>firesharp fn logs</c>): the pool reports every invocation that
/// ran or failed to initialize (<see cref="IInvocationObserver"/>, Event invocations and their retries too), and the
/// last <see cref="PerFunction"/> of each function are kept in memory, formatted as Lambda's START, output, END and
/// REPORT lines. Followers get new ones as they come (a follower that falls <see cref="FollowerBacklog"/> behind
/// loses the oldest). A daemon restart forgets them.
/// </summary>
public sealed class InvocationLogs : IInvocationObserver
{
    public const int PerFunction = 100;
    public const int FollowerBacklog = 256;

    private readonly Lock _gate = new();
    private readonly Dictionary<string, Queue<InvocationLog>> _logs = new(StringComparer.Ordinal);
    private readonly List<(string Name, Channel<InvocationLog> Channel)> _followers = [];
    private readonly TimeProvider _time;

    public InvocationLogs(TimeProvider? time = null) => _time = time ?? TimeProvider.System;

    public void Invoked(string functionName, InvokeResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var log = new InvocationLog(functionName, result.RequestId, _time.GetUtcNow(), LambdaLogFormat.Format(result));
        lock (_gate)
        {
            if (!_logs.TryGetValue(functionName, out var ring)) _logs[functionName] = ring = new Queue<InvocationLog>();
            if (ring.Count == PerFunction) ring.Dequeue();
            ring.Enqueue(log);
            foreach (var (name, channel) in _followers)
                if (name == functionName) channel.Writer.TryWrite(log);
        }
    }

    public void Throttled(string functionName, ThrottleReason reason) { }

    /// <summary>Forgets a deleted function's logs.</summary>
    public void Forget(string functionName)
    {
        lock (_gate) _logs.Remove(functionName);
    }

    /// <summary>The kept logs of a function (the last <paramref name="limit"/>, 0: all), oldest first; then, with <paramref name="follow"/>, new ones until cancelled.</summary>
    public async IAsyncEnumerable<InvocationLog> ReadAsync(string functionName, int limit, bool follow, [EnumeratorCancellation] CancellationToken ct)
    {
        List<InvocationLog> kept;
        Channel<InvocationLog>? channel = null;
        lock (_gate)
        {
            kept = _logs.TryGetValue(functionName, out var ring) ? [.. ring] : [];
            if (follow)
            {
                channel = Channel.CreateBounded<InvocationLog>(new BoundedChannelOptions(FollowerBacklog) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
                _followers.Add((functionName, channel));
            }
        }
        try
        {
            foreach (var log in limit > 0 && kept.Count > limit ? kept[^limit..] : kept) yield return log;
            if (channel is null) yield break;
            IAsyncEnumerator<InvocationLog> next = channel.Reader.ReadAllAsync(ct).GetAsyncEnumerator(ct);
            try
            {
                while (true)
                {
                    try
                    {
                        if (!await next.MoveNextAsync().ConfigureAwait(false)) yield break;
                    }
                    catch (OperationCanceledException) { yield break; }
                    yield return next.Current;
                }
            }
            finally
            {
                await next.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            if (channel is not null)
                lock (_gate) _followers.RemoveAll(f => f.Channel == channel);
        }
    }
}

/// <summary>Lambda's invocation log lines, as CloudWatch Logs shows them for a function.</summary>
public static class LambdaLogFormat
{
    /// <summary>
    /// <c>START RequestId: ID Version: $LATEST</c>, the function's output (its last 4 KiB; a timeout's "Task timed
    /// out" line), <c>END RequestId: ID</c>, and <c>REPORT RequestId: ID	Duration: 12.34 ms	Billed Duration: 13 ms	Memory Size:
    /// 128 MB	Max Memory Used: 20 MB</c>, with <c>	Init Duration: 456.78 ms</c> after a cold start. Every line ends in a newline.
    /// The version is <c>$LATEST</c>, as for Lambda's unqualified invocations: FireSharp invokes a function's latest version.
    /// </summary>
    public static string Format(InvokeResult r)
    {
        ArgumentNullException.ThrowIfNull(r);
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(inv, $"START RequestId: {r.RequestId} Version: $LATEST\n");
        if (r.LogTail.Length > 0)
        {
            sb.Append(r.LogTail);
            if (!r.LogTail.EndsWith('\n')) sb.Append('\n');
        }
        if (r.VmStatus == VmInvokeStatus.Timeout)
            sb.Append(inv, $"{DateTime.UtcNow:yyyy-MM-dd'T'HH:mm:ss.fff'Z'} {r.RequestId} Task timed out after {r.Timeout.TotalSeconds:F2} seconds\n");
        if (r.InitFailed)
            sb.Append(inv, $"INIT_REPORT Init Duration: {Ms(r.InitDuration ?? r.Duration)} ms\tPhase: init\tStatus: error\tError Type: {r.ErrorType ?? "Runtime.Unknown"}\n");
        sb.Append(inv, $"END RequestId: {r.RequestId}\n");
        sb.Append(inv, $"REPORT RequestId: {r.RequestId}\tDuration: {Ms(r.Duration)} ms\tBilled Duration: {(long)r.BilledDuration.TotalMilliseconds} ms\t");
        sb.Append(inv, $"Memory Size: {r.MemoryMib} MB\tMax Memory Used: {r.MaxMemoryUsedMib} MB");
        if (r.InitDuration is { } init) sb.Append(inv, $"\tInit Duration: {Ms(init)} ms");
        sb.Append('\n');
        return sb.ToString();
    }

    private static string Ms(TimeSpan t) => t.TotalMilliseconds.ToString("F2", CultureInfo.InvariantCulture);
}

/// <summary>Tells several observers of the pool's invocations (the metrics and the invocation logs).</summary>
public sealed class InvocationObservers(params IInvocationObserver[] observers) : IInvocationObserver
{
    public void Invoked(string functionName, InvokeResult result)
    {
        foreach (var o in observers) o.Invoked(functionName, result);
    }

    public void Throttled(string functionName, ThrottleReason reason)
    {
        foreach (var o in observers) o.Throttled(functionName, reason);
    }
}
