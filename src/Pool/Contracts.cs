namespace FireSharp.Pool;

/// <summary>How the VM that served an invocation came to be.</summary>
public enum StartKind
{
    /// <summary>An idle, initialized VM was reused.</summary>
    Warm,
    /// <summary>A new VM restored from the function version's post-init snapshot.</summary>
    SnapshotCold,
    /// <summary>A new VM booted and its runtime initialized (no snapshot yet, or snapshot start off).</summary>
    BootCold,
}

/// <summary>Lambda's invocation types.</summary>
public enum InvocationType
{
    RequestResponse,
    /// <summary>Asynchronous: queued, answered at once, retried twice on failure.</summary>
    Event,
    /// <summary>Validates the request and permissions; runs nothing.</summary>
    DryRun,
}

/// <summary>
/// One immutable version of a function, as a VM factory needs it: what to boot and how to start its runtime.
/// Configuration or code updates make a new version (a new <see cref="Version"/>).
/// </summary>
public sealed record FunctionDefinition
{
    public required string Name { get; init; }
    /// <summary>Changes on every configuration or code update; snapshots are keyed by (Name, Version).</summary>
    public required string Version { get; init; }
    public required string KernelPath { get; init; }
    /// <summary>The root filesystem image (ext4, mounted read-only; the agent is in it).</summary>
    public required string RootfsPath { get; init; }
    /// <summary>Up to 5 ext4 images, mounted read-only under /opt in order.</summary>
    public IReadOnlyList<string> LayerPaths { get; init; } = [];
    /// <summary>The code drive (ext4), mounted read-only at /var/task.</summary>
    public required string CodeImagePath { get; init; }
    public required string Handler { get; init; }
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    public int MemoryMib { get; init; } = 128;
    public int Vcpus { get; init; } = 1;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(3);
    public bool SnapshotStart { get; init; } = true;
}

/// <summary>
/// One invocation as a VM receives it. Whatever else the VM's runtime is told (an ARN, a trace id) is the VM's
/// business: it knows its function.
/// </summary>
public sealed record VmInvokeRequest(
    string RequestId,
    ReadOnlyMemory<byte> Payload,
    DateTimeOffset Deadline);

public enum VmInvokeStatus
{
    Success,
    /// <summary>The handler reported an error (/response/error) or the runtime exited: see <see cref="VmInvokeOutcome.Unhandled"/>.</summary>
    FunctionError,
    /// <summary>The deadline passed; the runtime was killed. The VM must be recycled.</summary>
    Timeout,
    /// <summary>The VM, the agent or the runtime died. The VM must be recycled.</summary>
    Crashed,
    /// <summary>The function ran out of memory. The VM must be recycled.</summary>
    OutOfMemory,
}

/// <summary>What one VM reports for one invocation.</summary>
public sealed record VmInvokeOutcome
{
    public required VmInvokeStatus Status { get; init; }
    public ReadOnlyMemory<byte> Payload { get; init; }
    /// <summary>The error type the runtime reported, if any (passed through to <see cref="InvokeResult.ErrorType"/>).</summary>
    public string? ErrorType { get; init; }
    /// <summary>True when the error was not reported by the handler itself (runtime crash, exit, timeout).</summary>
    public bool Unhandled { get; init; }
    /// <summary>The last 4 KiB of the runtime's stdout+stderr for this invocation.</summary>
    public string LogTail { get; init; } = "";
    public TimeSpan Duration { get; init; }
    public long MaxMemoryUsedBytes { get; init; }
}

/// <summary>
/// One initialized microVM serving one function version; at most one invocation at a time (the pool
/// guarantees it). Implementations: the daemon's real VM (worker process + guest agent) and test fakes.
/// </summary>
public interface IFunctionVm : IAsyncDisposable
{
    string Id { get; }
    /// <summary>How this VM was created (<see cref="StartKind.SnapshotCold"/> or <see cref="StartKind.BootCold"/>).</summary>
    StartKind CreatedAs { get; }
    /// <summary>Time from the start of creation until the runtime was ready for its first invocation.</summary>
    TimeSpan InitDuration { get; }
    Task<VmInvokeOutcome> InvokeAsync(VmInvokeRequest request, CancellationToken cancellationToken);
    /// <summary>Graceful stop: extensions get SHUTDOWN, the runtime is stopped, then the VM is destroyed.</summary>
    Task ShutdownAsync(string reason, CancellationToken cancellationToken);
}

/// <summary>Creates initialized VMs for a function version: from its snapshot when there is one, else by booting.</summary>
public interface IFunctionVmFactory
{
    /// <exception cref="FunctionInitException">the runtime failed to initialize (bootstrap missing, /runtime/init/error, crash).</exception>
    Task<IFunctionVm> CreateAsync(FunctionDefinition definition, CancellationToken cancellationToken);

    /// <summary>Forget (delete) snapshots of versions of <paramref name="functionName"/> other than <paramref name="keepVersion"/> (null = all).</summary>
    Task DiscardSnapshotsAsync(string functionName, string? keepVersion, CancellationToken cancellationToken);
}

/// <summary>The function's runtime could not initialize (it failed, crashed or timed out); <see cref="ErrorType"/> says how, if the factory knows.</summary>
public sealed class FunctionInitException(string errorType, string message, string logTail = "")
    : Exception(message)
{
    public string ErrorType { get; } = errorType;
    public string LogTail { get; } = logTail;
}

/// <summary>Sees the pool's invocations as they are counted (see <see cref="PoolOptions.Observer"/>).</summary>
public interface IInvocationObserver
{
    /// <summary>An invocation of <paramref name="functionName"/> ran (or failed to initialize) with <paramref name="result"/>.</summary>
    void Invoked(string functionName, InvokeResult result);

    /// <summary>An invocation of <paramref name="functionName"/> was refused at a limit.</summary>
    void Throttled(string functionName, ThrottleReason reason);
}
