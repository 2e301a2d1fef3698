using System.Net.Sockets;
using FireSharp.Proto.Worker;
using FireSharp.Worker.Protocol;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// One VM's worker: owns a <see cref="MicroVm"/> and serves the daemon's requests on a Unix socket (the
/// protocol is in src/Proto/firesharp/worker/v1/worker.proto). The same class runs in the
/// <c>firesharp-vmm</c> process and, in tests, inside the test process.
/// </summary>
/// <remarks>
/// The worker keeps living after the guest ends (the machine and its memory are released, the console
/// history is kept) until the daemon sends <c>shutdown</c>. If nobody creates a machine within
/// <see cref="ConfigureTimeout"/> of the start, the worker ends by itself, so a daemon that died while
/// starting it leaves no orphan.
/// </remarks>
public sealed partial class VmWorker : IAsyncDisposable
{
    public static readonly TimeSpan ConfigureTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan PauseTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan ForceStopTimeout = TimeSpan.FromSeconds(10);

    private readonly string _socketPath;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly ConsoleLog _console = new();
    private readonly List<System.Threading.Channels.Channel<WorkerEvent>> _subscribers = [];
    private readonly CancellationTokenSource _shutdown = new();
    private readonly List<Socket> _connections = [];
    private readonly SemaphoreSlim _lifecycle = new(1, 1); // one create/start/pause/resume/stop/shutdown at a time
    private Socket? _listener;
    private MicroVm? _vm;
    private string _id = "";
    private MachineState _state = MachineState.Empty;
    private MachineExitKind _exitKind;
    private string _exitReason = "";
    private bool _exitClean;
    private double _bootMs;
    private ulong _seq;

    public VmWorker(string socketPath, ILogger logger)
    {
        _socketPath = socketPath;
        _logger = logger;
    }

    /// <summary>Releases an ended machine (guest memory, KVM fds); tests make it fail.</summary>
    internal Action<MicroVm> ReleaseMachine { get; init; } = static vm => vm.Dispose();

    /// <summary>The process id reported in statuses (the worker's own pid).</summary>
    public int Pid { get; init; } = Environment.ProcessId;

    /// <summary>Completes when a shutdown was requested (or <see cref="Abort"/> was called).</summary>
    public Task Completion => _completion.Task;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Binds the socket (removing a stale one) and starts accepting connections.</summary>
    public void Start()
    {
        if (File.Exists(_socketPath)) File.Delete(_socketPath);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(_socketPath));
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(_socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        _ = AcceptLoopAsync(listener);
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
        if (_shutdown.IsCancellationRequested) return;
        _logger.LogInformation("worker {Id}: shutting down ({Why})", _id, why);
        _shutdown.Cancel();
        try { _listener?.Dispose(); } catch (ObjectDisposedException) { }
        lock (_gate)
        {
            foreach (var c in _connections) c.Dispose();
            _connections.Clear();
            foreach (var s in _subscribers) s.Writer.TryComplete();
            _subscribers.Clear();
        }
        _console.CompleteAll();
        _completion.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        RequestShutdown("disposed");
        MicroVm? vm;
        lock (_gate) { vm = _vm; _vm = null; }
        if (vm is not null) await Task.Run(vm.Dispose).ConfigureAwait(false);
        try { File.Delete(_socketPath); } catch (IOException) { }
    }

    private async Task ConfigureWatchdogAsync()
    {
        try { await Task.Delay(ConfigureTimeout, _shutdown.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        bool unconfigured;
        lock (_gate) unconfigured = _state == MachineState.Empty;
        if (unconfigured) RequestShutdown($"no machine was created within {ConfigureTimeout.TotalSeconds:F0} s");
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_shutdown.IsCancellationRequested)
        {
            Socket conn;
            try { conn = await listener.AcceptAsync(_shutdown.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
            lock (_gate)
            {
                if (_shutdown.IsCancellationRequested) { conn.Dispose(); return; }
                _connections.Add(conn);
            }
            _ = ServeAsync(conn);
        }
    }

    private async Task ServeAsync(Socket conn)
    {
        var stream = new NetworkStream(conn, ownsSocket: true);
        var ct = _shutdown.Token;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                var request = await WorkerFraming.ReadAsync(stream, WorkerRequest.Parser, ct).ConfigureAwait(false);
                if (request is null) return;
                switch (request.RequestCase)
                {
                    case WorkerRequest.RequestOneofCase.Subscribe:
                        await StreamEventsAsync(stream, ct).ConfigureAwait(false);
                        return;
                    case WorkerRequest.RequestOneofCase.Console:
                        await StreamConsoleAsync(stream, request.Console.Replay, ct).ConfigureAwait(false);
                        return;
                    case WorkerRequest.RequestOneofCase.Shutdown:
                        await ShutdownMachineAsync().ConfigureAwait(false);
                        await WorkerFraming.WriteAsync(stream, new WorkerMessage { Status = Status() }, CancellationToken.None).ConfigureAwait(false);
                        RequestShutdown("requested by the daemon");
                        return;
                    default:
                        var reply = await HandleAsync(request).ConfigureAwait(false);
                        await WorkerFraming.WriteAsync(stream, reply, ct).ConfigureAwait(false);
                        break;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException
                                      or InvalidDataException or Google.Protobuf.InvalidProtocolBufferException)
        {
            // The daemon went away or sent garbage: drop this connection only.
        }
        finally
        {
            lock (_gate) _connections.Remove(conn);
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task<WorkerMessage> HandleAsync(WorkerRequest request)
    {
        await _lifecycle.WaitAsync().ConfigureAwait(false);
        try
        {
            switch (request.RequestCase)
            {
                case WorkerRequest.RequestOneofCase.Create: Create(request.Create); break;
                case WorkerRequest.RequestOneofCase.Restore: Restore(request.Restore); break; // VmWorkerSnapshots.cs
                case WorkerRequest.RequestOneofCase.Snapshot: return TakeSnapshot(request.Snapshot);
                case WorkerRequest.RequestOneofCase.Start: StartMachine(); break;
                case WorkerRequest.RequestOneofCase.Pause: PauseMachine(); break;
                case WorkerRequest.RequestOneofCase.Resume: ResumeMachine(); break;
                case WorkerRequest.RequestOneofCase.Stop: await StopMachineAsync(request.Stop).ConfigureAwait(false); break;
                case WorkerRequest.RequestOneofCase.Status: break;
                case WorkerRequest.RequestOneofCase.ConsoleInput: Input(request.ConsoleInput.Span); break;
                default: throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, "", $"unexpected request {request.RequestCase}");
            }
            return new WorkerMessage { Status = Status() };
        }
        catch (WorkerFailure e)
        {
            return new WorkerMessage { Error = e.ToWire() };
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _logger.LogError(e, "worker {Id}: {Request} failed", _id, request.RequestCase);
            return new WorkerMessage { Error = new WorkerError { Code = WorkerErrorCode.WorkerErrorInternal, Message = $"{e.GetType().Name}: {e.Message}" } };
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    private void Create(CreateMachine c)
    {
        lock (_gate)
            if (_state != MachineState.Empty) throw WrongState("create");
        var spec = MachineSpecs.ToVmSpec(c, _console, _logger);
        MicroVm vm;
        try
        {
            vm = MicroVm.Create(spec);
        }
        catch (Exception e) when (WorkerFailures.ForCreate(e) is { } failure)
        {
            throw failure;
        }
        lock (_gate)
        {
            _id = c.Id;
            _vm = vm;
            SetState(MachineState.Created);
        }
        _ = WatchExitAsync(vm);
        _logger.LogInformation("worker {Id}: machine created ({Mib} MiB, {Vcpus} vCPU, kernel {Kernel})", c.Id, c.MemMib, c.Vcpus, c.KernelPath);
    }

    private void StartMachine()
    {
        MicroVm vm;
        lock (_gate)
        {
            if (_state != MachineState.Created || _vm is null) throw WrongState("start");
            vm = _vm;
            // RUNNING before the vCPUs start: a guest that ends at once must still be seen running first.
            SetState(MachineState.Running);
        }
        try
        {
            vm.Start();
        }
        catch
        {
            lock (_gate)
                if (_state == MachineState.Running) SetState(MachineState.Created);
            throw;
        }
        _ = WatchBootDoneAsync(vm);
    }

    private void PauseMachine()
    {
        MicroVm vm;
        lock (_gate)
        {
            if (_state != MachineState.Running || _vm is null) throw WrongState("pause");
            vm = _vm;
        }
        bool paused;
        try { paused = vm.Pause(PauseTimeout); }
        catch (InvalidOperationException) { throw WrongState("pause"); } // the guest ended meanwhile
        if (!paused)
        {
            lock (_gate)
                if (_state == MachineState.Exited) throw WrongState("pause");
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorTimeout, "", $"the vCPUs did not pause within {PauseTimeout.TotalSeconds:F0} s");
        }
        lock (_gate)
            if (_state == MachineState.Running) SetState(MachineState.Paused);
    }

    private void ResumeMachine()
    {
        MicroVm vm;
        lock (_gate)
        {
            if (_state != MachineState.Paused || _vm is null) throw WrongState("resume");
            vm = _vm;
        }
        try { vm.Resume(); }
        catch (InvalidOperationException) { throw WrongState("resume"); }
        lock (_gate)
            if (_state == MachineState.Paused) SetState(MachineState.Running);
    }

    private async Task StopMachineAsync(StopMachine stop)
    {
        MicroVm vm;
        bool graceful;
        lock (_gate)
        {
            if (_state is not (MachineState.Running or MachineState.Paused) || _vm is null) throw WrongState("stop");
            vm = _vm;
            graceful = !stop.Force && _state == MachineState.Running; // a paused guest cannot see Ctrl-Alt-Del
            SetState(MachineState.Stopping);
        }
        if (graceful && vm.Keyboard.SendCtrlAltDel())
        {
            _logger.LogInformation("worker {Id}: sent Ctrl-Alt-Del; waiting up to {Ms} ms", _id, stop.GraceMs);
            await Task.WhenAny(vm.Exited, Task.Delay(Math.Max(0, stop.GraceMs))).ConfigureAwait(false);
        }
        if (!vm.Exited.IsCompleted)
        {
            _logger.LogInformation("worker {Id}: stopping the vCPUs", _id);
            await Task.Run(() => vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, graceful
                ? $"stopped by force after a {stop.GraceMs} ms grace period"
                : "stopped by the host"))).ConfigureAwait(false);
        }
        if (await Task.WhenAny(vm.Exited, Task.Delay(ForceStopTimeout)).ConfigureAwait(false) != vm.Exited)
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorTimeout, "", "the vCPU threads did not stop in time");
        await _exitHandled.Task.ConfigureAwait(false);
    }

    private readonly TaskCompletionSource _exitHandled = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task ShutdownMachineAsync()
    {
        await _lifecycle.WaitAsync().ConfigureAwait(false);
        try
        {
            MicroVm? vm;
            lock (_gate) vm = _vm;
            if (vm is null) return;
            if (!vm.Exited.IsCompleted) vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "worker shut down"));
            await Task.WhenAny(vm.Exited, Task.Delay(ForceStopTimeout)).ConfigureAwait(false);
            await Task.WhenAny(_exitHandled.Task, Task.Delay(ForceStopTimeout)).ConfigureAwait(false);
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    private async Task WatchExitAsync(MicroVm vm)
    {
        var exit = await vm.Exited.ConfigureAwait(false);
        double boot = vm.BootTimer.BootDone?.TotalMilliseconds ?? 0;
        lock (_gate)
        {
            if (boot > 0 && _bootMs == 0) _bootMs = boot;
            _exitKind = WorkerFailures.ToWire(exit.Kind);
            _exitReason = exit.Reason;
            _exitClean = exit.IsClean;
            _vm = null;
            SetState(MachineState.Exited);
        }
        _logger.LogInformation("worker {Id}: guest ended: {Exit}", _id, exit);
        _console.CompleteAll(); // console streams end with the guest
        try
        {
            ReleaseMachine(vm); // releases guest memory and KVM fds; the console history stays
        }
        catch (Exception e)
        {
            _logger.LogError(e, "worker {Id}: releasing the ended machine failed", _id);
        }
        finally
        {
            _exitHandled.TrySetResult(); // a stop waits for this: it must come whatever the release did
        }
    }

    /// <summary>Tells the subscribers when the guest signals boot-done; nothing polls, so an idle guest costs no CPU.</summary>
    private async Task WatchBootDoneAsync(MicroVm vm)
    {
        var done = vm.BootTimer.Done;
        try { await Task.WhenAny(done, vm.Exited).WaitAsync(_shutdown.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return; }
        if (!done.IsCompleted) return; // the guest ended first
        lock (_gate)
        {
            if (_bootMs != 0) return;
            _bootMs = done.Result.TotalMilliseconds;
            _seq++;
            Broadcast(new WorkerEvent { Status = StatusLocked(), BootDone = true });
        }
    }

    private void Input(ReadOnlySpan<byte> data)
    {
        MicroVm? vm;
        lock (_gate) vm = _vm;
        if (vm is null) throw WrongState("send console input to");
        while (!data.IsEmpty)
        {
            int taken = vm.Serial.EnqueueInput(data);
            if (taken == 0) break; // receiver full: the guest is not reading; drop the rest
            data = data[taken..];
        }
    }

    private async Task StreamEventsAsync(NetworkStream stream, CancellationToken ct)
    {
        var channel = System.Threading.Channels.Channel.CreateUnbounded<WorkerEvent>(new() { SingleReader = true });
        lock (_gate)
        {
            channel.Writer.TryWrite(new WorkerEvent { Status = StatusLocked() });
            _subscribers.Add(channel);
        }
        try
        {
            await foreach (var ev in channel.Reader.ReadAllAsync(ct).ConfigureAwait(false))
                await WorkerFraming.WriteAsync(stream, new WorkerMessage { Event = ev }, ct).ConfigureAwait(false);
        }
        finally
        {
            lock (_gate) _subscribers.Remove(channel);
        }
    }

    private async Task StreamConsoleAsync(NetworkStream stream, bool replay, CancellationToken ct)
    {
        using var reader = _console.Attach(replay);
        using var done = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Input arrives on the same connection; EOF from the daemon ends the whole console session.
        var inputs = Task.Run(async () =>
        {
            try
            {
                while (await WorkerFraming.ReadAsync(stream, WorkerRequest.Parser, done.Token).ConfigureAwait(false) is { } req)
                    if (req.RequestCase == WorkerRequest.RequestOneofCase.ConsoleInput)
                    {
                        try { Input(req.ConsoleInput.Span); }
                        catch (WorkerFailure) { } // the machine is gone: nothing to type into
                    }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or InvalidDataException
                                          or Google.Protobuf.InvalidProtocolBufferException) { }
            finally { done.Cancel(); }
        }, CancellationToken.None);
        try
        {
            await foreach (var (data, dropped) in reader.ReadAllAsync(done.Token).ConfigureAwait(false))
            {
                // Large histories go out in frames well below the frame limit.
                int off = 0;
                do
                {
                    int n = Math.Min(64 * 1024, data.Length - off);
                    var chunk = new ConsoleChunk { Data = Google.Protobuf.ByteString.CopyFrom(data, off, n), Dropped = off == 0 ? dropped : 0 };
                    await WorkerFraming.WriteAsync(stream, new WorkerMessage { Console = chunk }, done.Token).ConfigureAwait(false);
                    off += n;
                } while (off < data.Length);
            }
        }
        catch (OperationCanceledException) { }
        finally
        {
            done.Cancel();
            await inputs.ConfigureAwait(false);
        }
    }

    private WorkerStatus Status()
    {
        lock (_gate) return StatusLocked();
    }

    private WorkerStatus StatusLocked() => new()
    {
        State = _state,
        ExitKind = _exitKind,
        ExitReason = _exitReason,
        ExitClean = _exitClean,
        BootTimeMs = _bootMs,
        Pid = Pid,
        Seq = _seq,
    };

    /// <summary>Under <see cref="_gate"/>: changes the state and tells every subscriber.</summary>
    private void SetState(MachineState state)
    {
        if (_state == state) return;
        _state = state;
        _seq++;
        Broadcast(new WorkerEvent { Status = StatusLocked() });
    }

    private void Broadcast(WorkerEvent ev)
    {
        foreach (var s in _subscribers) s.Writer.TryWrite(ev);
    }

    private WorkerFailure WrongState(string what)
    {
        lock (_gate)
            return new WorkerFailure(WorkerErrorCode.WorkerErrorWrongState, "", $"cannot {what} a VM that is {Describe(_state)}");
    }

    internal static string Describe(MachineState s) => s switch
    {
        MachineState.Empty => "not created",
        MachineState.Created => "created and not started",
        MachineState.Running => "running",
        MachineState.Paused => "paused",
        MachineState.Stopping => "stopping",
        MachineState.Exited => "stopped",
        _ => s.ToString(),
    };

}
