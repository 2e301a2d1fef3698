namespace FireSharp.Pool;

/// <summary>What <see cref="FunctionPool.InvokeAsync"/> did with an invocation.</summary>
public enum InvokeStatus
{
    /// <summary>It ran (also when the function failed: see <see cref="InvokeResult.FunctionError"/>). RequestResponse.</summary>
    Ran,
    /// <summary>It was queued and runs in the background. Event.</summary>
    Queued,
    /// <summary>It was only validated. DryRun.</summary>
    Validated,
}

/// <summary>How an invocation that ran failed, as far as the pool is concerned.</summary>
public enum FunctionErrorKind
{
    /// <summary>The handler reported the error itself; its VM stays warm.</summary>
    Handled,
    /// <summary>The runtime did not finish the invocation (it exited, crashed, ran out of memory or time, or never initialized); its VM is recycled.</summary>
    Unhandled,
}

/// <summary>
/// The answer to one <see cref="FunctionPool.InvokeAsync"/>, in the pool's terms: what happened and what it used.
/// How a particular API presents it (status codes, error bodies) is the API's business (see FireSharp.Daemon.Functions.Lambda).
/// </summary>
public sealed record InvokeResult
{
    /// <summary>The invocation's id (a GUID), also given to the VM and used to look Event invocations up.</summary>
    public required string RequestId { get; init; }
    public required InvokeStatus Status { get; init; }
    /// <summary>What the function answered (for an error, whatever the VM reported, possibly nothing).</summary>
    public ReadOnlyMemory<byte> Payload { get; init; }
    /// <summary>null on success.</summary>
    public FunctionErrorKind? FunctionError { get; init; }
    /// <summary>The error type the VM or the failed initialization reported; null when it reported none.</summary>
    public string? ErrorType { get; init; }
    /// <summary>For a failed initialization: why (the factory's message).</summary>
    public string? ErrorMessage { get; init; }
    /// <summary>The VM could not be created because the function's runtime failed to initialize.</summary>
    public bool InitFailed { get; init; }
    /// <summary>The end of the runtime's output for this invocation: at most 4 KiB of UTF-8.</summary>
    public string LogTail { get; init; } = "";
    /// <summary>Only for a cold start: the VM's init duration.</summary>
    public TimeSpan? InitDuration { get; init; }
    public TimeSpan Duration { get; init; }
    /// <summary><see cref="Duration"/> rounded up to the next whole millisecond.</summary>
    public TimeSpan BilledDuration { get; init; }
    public int MaxMemoryUsedMib { get; init; }
    public StartKind StartKind { get; init; }
    public int MemoryMib { get; init; }
    /// <summary>The function version's timeout.</summary>
    public TimeSpan Timeout { get; init; }
    /// <summary>BilledDuration (s) × MemoryMib / 1024.</summary>
    public decimal GbSeconds { get; init; }
    /// <summary>The function version that ran.</summary>
    public string? Version { get; init; }
    /// <summary>What the VM reported (null: DryRun, Event acceptance, init error).</summary>
    public VmInvokeStatus? VmStatus { get; init; }
}

/// <summary>Whether a function serves invocations or is being deleted.</summary>
public enum FunctionState
{
    Active,
    Deleting,
}

/// <summary>A configuration update: null fields keep their value. Makes a new version.</summary>
public sealed record FunctionConfigurationUpdate
{
    public string? Handler { get; init; }
    public int? MemoryMib { get; init; }
    public int? Vcpus { get; init; }
    public TimeSpan? Timeout { get; init; }
    public IReadOnlyDictionary<string, string>? Environment { get; init; }
    public IReadOnlyList<string>? LayerPaths { get; init; }
    public string? KernelPath { get; init; }
    public string? RootfsPath { get; init; }
    public bool? SnapshotStart { get; init; }
}

/// <summary>What Get/List return: the current definition, concurrency settings and live stats.</summary>
public sealed record FunctionInfo
{
    public required FunctionDefinition Definition { get; init; }
    public required FunctionState State { get; init; }
    /// <summary>null: no reservation (the function shares the unreserved pool). 0: throttled entirely.</summary>
    public int? ReservedConcurrency { get; init; }
    public int ProvisionedConcurrency { get; init; }
    public required DateTimeOffset LastModified { get; init; }
    public required FunctionStats Stats { get; init; }
}

/// <summary>Counters since the function was created, plus its VMs right now.</summary>
public sealed record FunctionStats
{
    /// <summary>Invocations that ran (or tried to: init errors count); throttles excluded, Event retries each count.</summary>
    public long Invocations { get; init; }
    /// <summary>Invocations with a FunctionError (handled, unhandled, timeout, init error).</summary>
    public long Errors { get; init; }
    public long Throttles { get; init; }
    public long Timeouts { get; init; }
    public long InitErrors { get; init; }
    public long WarmStarts { get; init; }
    public long SnapshotColdStarts { get; init; }
    public long BootColdStarts { get; init; }
    public decimal GbSeconds { get; init; }
    /// <summary>Over the last 1024 invocations; null before the first.</summary>
    public TimeSpan? DurationP50 { get; init; }
    public TimeSpan? DurationP99 { get; init; }
    public long AsyncAccepted { get; init; }
    public long AsyncSucceeded { get; init; }
    /// <summary>Event invocations that failed every attempt.</summary>
    public long AsyncFailed { get; init; }
    public long AsyncRetries { get; init; }
    /// <summary>In-flight invocations (including VMs being created for one).</summary>
    public int InFlight { get; init; }
    public int IdleVms { get; init; }
    public int BusyVms { get; init; }
    /// <summary>VMs being created (for invocations and for provisioned concurrency).</summary>
    public int CreatingVms { get; init; }
    /// <summary>Provisioned VMs that exist now (idle or busy) for the current version.</summary>
    public int ProvisionedReady { get; init; }
    /// <summary>VMs of older versions not yet shut down.</summary>
    public int DrainingVms { get; init; }
}

/// <summary>The account's concurrency settings and use, plus the pool's totals.</summary>
public sealed record AccountSettings
{
    public int ConcurrencyLimit { get; init; }
    public int UnreservedMinimum { get; init; }
    public int TotalReserved { get; init; }
    /// <summary>Limit minus all reservations: the pool shared by functions without a reservation.</summary>
    public int UnreservedConcurrency { get; init; }
    /// <summary>Unreserved pool minus what functions without a reservation use now.</summary>
    public int UnreservedAvailable { get; init; }
    public int InFlight { get; init; }
    public int FunctionCount { get; init; }
    public int AsyncQueued { get; init; }
    public long Invocations { get; init; }
    public long Errors { get; init; }
    public long Throttles { get; init; }
    public decimal GbSeconds { get; init; }
}

public enum AsyncInvocationState
{
    Queued,
    Running,
    /// <summary>Waiting for the delay before a retry.</summary>
    RetryPending,
    Succeeded,
    Failed,
}

/// <summary>One Event invocation, as queryable by request id.</summary>
public sealed record AsyncInvocationRecord
{
    public required string RequestId { get; init; }
    public required string FunctionName { get; init; }
    public required AsyncInvocationState State { get; init; }
    public int Attempts { get; init; }
    public required DateTimeOffset AcceptedAt { get; init; }
    public DateTimeOffset? FinishedAt { get; init; }
    /// <summary>The last attempt's result (null when it was throttled or failed before running).</summary>
    public InvokeResult? LastResult { get; init; }
    /// <summary>Why the last attempt failed when there is no result (throttle, service error).</summary>
    public string? LastError { get; init; }
}
