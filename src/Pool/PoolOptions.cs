namespace FireSharp.Pool;

/// <summary>Limits and timings of a <see cref="FunctionPool"/>. Defaults follow AWS Lambda where Lambda has a number.</summary>
public sealed record PoolOptions
{
    /// <summary>Account-wide cap on in-flight invocations (Lambda's default: 1000).</summary>
    public int AccountConcurrencyLimit { get; init; } = 1000;

    /// <summary>Reservations may add up to at most <see cref="AccountConcurrencyLimit"/> minus this (Lambda: 100).</summary>
    public int UnreservedMinimum { get; init; } = 100;

    /// <summary>An idle VM that is not provisioned is shut down after this long without an invocation.</summary>
    public TimeSpan IdleTtl { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the reaper looks for idle VMs older than <see cref="IdleTtl"/>.</summary>
    public TimeSpan ReapInterval { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Clock and timers (deadlines, reaping, retry delays). Tests pass a fake.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Event invocations waiting for a worker; a full queue throttles (<see cref="ThrottleReason.AsyncQueueFull"/>).</summary>
    public int AsyncQueueCapacity { get; init; } = 10_000;

    /// <summary>Background tasks that take Event invocations from the queue.</summary>
    public int AsyncWorkers { get; init; } = 8;

    /// <summary>Event invocation retries after the first attempt fails (Lambda: 2).</summary>
    public int AsyncMaxRetries { get; init; } = 2;

    /// <summary>Delay before retry n (1-based index into the list, the last entry repeats). Lambda: 1 min, then 2 min.</summary>
    public IReadOnlyList<TimeSpan> AsyncRetryDelays { get; init; } = [TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2)];

    /// <summary>How many finished Event invocations stay queryable by request id.</summary>
    public int AsyncHistory { get; init; } = 1000;

    /// <summary>Largest RequestResponse (and DryRun) payload (Lambda: 6 MB).</summary>
    public int MaxRequestResponsePayloadBytes { get; init; } = 6 * 1024 * 1024;

    /// <summary>Largest Event payload (Lambda: 256 KB).</summary>
    public int MaxEventPayloadBytes { get; init; } = 256 * 1024;

    /// <summary>Extra time the host waits past a function's deadline before it gives up on the VM and recycles it.</summary>
    public TimeSpan TimeoutGrace { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>What <see cref="FunctionThrottledException.RetryAfter"/> advises.</summary>
    public TimeSpan ThrottleRetryAfter { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Bound on a graceful <see cref="IFunctionVm.ShutdownAsync"/>; after it the VM is disposed anyway.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Wait before the pool tries again to create a provisioned VM after a creation failed.</summary>
    public TimeSpan ProvisionRetryDelay { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Told of every invocation that ran (Event attempts each) and every throttle, for metrics; called under the pool's
    /// lock, so it must be quick and must not throw or call back into the pool. Null: nobody is told.
    /// </summary>
    public IInvocationObserver? Observer { get; init; }
}
