namespace FireSharp.Pool;

/// <summary>Why a pool operation was refused. An API maps each to its own error (the daemon: Api/Functions/FunctionErrors.cs).</summary>
public enum PoolErrorKind
{
    /// <summary>No function has that name.</summary>
    NotFound,
    /// <summary>The function is being deleted.</summary>
    Deleting,
    /// <summary>CreateFunction with a name that is taken.</summary>
    AlreadyExists,
    /// <summary>A concurrency limit or the async queue is full.</summary>
    Throttled,
    /// <summary>A malformed definition or setting.</summary>
    InvalidArgument,
    /// <summary>The payload is larger than the invocation type allows.</summary>
    RequestTooLarge,
}

/// <summary>Base of the pool's typed errors; <see cref="Kind"/> says which.</summary>
public abstract class FunctionPoolException(PoolErrorKind kind, string message) : Exception(message)
{
    public PoolErrorKind Kind { get; } = kind;
}

public sealed class FunctionNotFoundException(string name)
    : FunctionPoolException(PoolErrorKind.NotFound, $"function not found: {name}")
{
    public string FunctionName { get; } = name;
}

public sealed class FunctionDeletingException(string name)
    : FunctionPoolException(PoolErrorKind.Deleting, $"function {name} is being deleted")
{
    public string FunctionName { get; } = name;
}

public sealed class FunctionExistsException(string name)
    : FunctionPoolException(PoolErrorKind.AlreadyExists, $"function already exists: {name}")
{
    public string FunctionName { get; } = name;
}

/// <summary>A request field is invalid; <see cref="Field"/> names it (e.g. "MemoryMib", "ReservedConcurrency").</summary>
public sealed class InvalidFunctionRequestException(string field, string message)
    : FunctionPoolException(PoolErrorKind.InvalidArgument, $"{field}: {message}")
{
    public string Field { get; } = field;
}

public sealed class RequestTooLargeException(int payloadBytes, int limitBytes, InvocationType type)
    : FunctionPoolException(PoolErrorKind.RequestTooLarge,
        $"{type} payload of {payloadBytes} bytes exceeds the limit of {limitBytes} bytes")
{
    public int PayloadBytes { get; } = payloadBytes;
    public int LimitBytes { get; } = limitBytes;
}

/// <summary>Which limit throttled an invocation.</summary>
public enum ThrottleReason
{
    /// <summary>The function's reserved concurrency (0 = the function is throttled entirely).</summary>
    ReservedConcurrency,
    /// <summary>The account's unreserved pool (limit minus all reservations), shared by functions without a reservation.</summary>
    UnreservedConcurrency,
    /// <summary>The account-wide concurrency limit.</summary>
    AccountConcurrency,
    /// <summary>The Event queue is full.</summary>
    AsyncQueueFull,
}

/// <summary>A limit was reached: the invocation was not run (Lambda's 429 TooManyRequestsException).</summary>
public sealed class FunctionThrottledException(string name, ThrottleReason reason, int limit, TimeSpan retryAfter)
    : FunctionPoolException(PoolErrorKind.Throttled, $"rate exceeded for {name}: {reason} (limit {limit})")
{
    public string FunctionName { get; } = name;
    public ThrottleReason Reason { get; } = reason;
    /// <summary>The value of the limit that was reached.</summary>
    public int Limit { get; } = limit;
    public TimeSpan RetryAfter { get; } = retryAfter;
}
