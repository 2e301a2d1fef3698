using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// One VM's worker: a <see cref="WorkerMachine"/> (the VM's lifecycle) served to the daemon by a
/// <see cref="WorkerServer"/> (the Unix socket and worker.proto, in src/Proto/firesharp/worker/v1/worker.proto).
/// The same class runs in the <c>firesharp-vmm</c> process and, in tests, inside the test process.
/// </summary>
/// <remarks>
/// The worker keeps living after the guest ends (the machine and its memory are released, the console
/// history is kept) until the daemon sends <c>shutdown</c>. If nobody creates a machine within
/// <see cref="ConfigureTimeout"/> of the start, the worker ends by itself, so a daemon that died while
/// starting it leaves no orphan.
/// </remarks>
public sealed class VmWorker : IAsyncDisposable
{
    public static readonly TimeSpan ConfigureTimeout = TimeSpan.FromSeconds(60);

    private readonly ILogger _logger;
    private readonly WorkerMachine _machine;
    private readonly WorkerServer _server;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _shuttingDown;

    public VmWorker(string socketPath, ILogger logger)
    {
        _logger = logger;
        _machine = new WorkerMachine(logger);
        _server = new WorkerServer(socketPath, _machine, RequestShutdown, logger);
    }

    /// <summary>Releases an ended machine (guest memory, KVM fds); tests make it fail.</summary>
    internal Action<MicroVm> ReleaseMachine
    {
        get => _machine.ReleaseMachine;
        init => _machine.ReleaseMachine = value;
    }

    /// <summary>The process id reported in statuses (the worker's own pid).</summary>
    public int Pid
    {
        get => _machine.Pid;
        init => _machine.Pid = value;
    }

    /// <summary>Completes when a shutdown was requested (or <see cref="Abort"/> was called).</summary>
    public Task Completion => _completion.Task;

    /// <summary>Binds the socket (removing a stale one) and starts accepting connections.</summary>
    public void Start()
    {
        _server.Start();
        _ = ConfigureWatchdogAsync();
    }

    /// <summary>Runs until shutdown; then releases everything. <paramref name="listening"/> runs once the socket accepts connections.</summary>
    public async Task RunAsync(CancellationToken ct, Action? listening = null)
    {
        Start();
        listening?.Invoke();
        using var reg = ct.Register(() => RequestShutdown("signal"));
        await Completion.ConfigureAwait(false);
        await DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Ends the worker as a crash would (tests): no reply, the machine torn down, connections dropped.</summary>
    public void Abort() => RequestShutdown("aborted");

    private void RequestShutdown(string why)
    {
        if (Interlocked.Exchange(ref _shuttingDown, 1) != 0) return;
        _shutdown.Cancel();
        WorkerLog.ShuttingDown(_logger, _machine.Id, why);
        _server.Stop();
        _machine.Close();
        _completion.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        RequestShutdown("disposed");
        await _machine.DisposeMachineAsync().ConfigureAwait(false);
        _server.RemoveSocket();
        _server.Dispose();
    }

    private async Task ConfigureWatchdogAsync()
    {
        try { await Task.Delay(ConfigureTimeout, _shutdown.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        if (_machine.IsEmpty) RequestShutdown($"no machine was created within {ConfigureTimeout.TotalSeconds:F0} s");
    }
}
