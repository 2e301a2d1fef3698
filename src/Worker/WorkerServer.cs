using System.Diagnostics;
using System.Net.Sockets;
using FireSharp.Proto.Worker;
using FireSharp.Worker.Protocol;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// The worker's side of worker.proto: the Unix socket, its accept loop and connections, length-prefixed
/// framing, and the dispatch of each request to the <see cref="WorkerMachine"/> (replies, typed errors, and
/// the event and console streams). It holds no VM state of its own.
/// </summary>
internal sealed class WorkerServer(string socketPath, WorkerMachine machine, Action<string> onShutdownRequested, ILogger logger) : IDisposable
{
    /// <summary>Console output goes out in frames of at most this many bytes, well below the frame limit.</summary>
    private const int ConsoleChunkBytes = 64 * 1024;

    private readonly CancellationTokenSource _stopped = new();
    private readonly Lock _gate = new();
    private readonly List<Socket> _connections = [];
    private Socket? _listener;

    /// <summary>Binds the socket (removing a stale one, and only its owner may connect) and starts accepting connections.</summary>
    public void Start()
    {
        if (File.Exists(socketPath)) File.Delete(socketPath);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(socketPath));
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        _ = AcceptLoopAsync(listener);
    }

    /// <summary>Stops accepting and drops every connection (their streams end).</summary>
    public void Stop()
    {
        _stopped.Cancel();
        try { _listener?.Dispose(); } catch (ObjectDisposedException) { }
        lock (_gate)
        {
            foreach (var c in _connections) c.Dispose();
            _connections.Clear();
        }
    }

    /// <summary>Stops (if not yet stopped) and releases the stop token's source.</summary>
    public void Dispose()
    {
        if (!_stopped.IsCancellationRequested) Stop();
        _stopped.Dispose();
    }

    /// <summary>Removes the socket file.</summary>
    public void RemoveSocket()
    {
        try { File.Delete(socketPath); } catch (IOException) { }
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_stopped.IsCancellationRequested)
        {
            Socket conn;
            try { conn = await listener.AcceptAsync(_stopped.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
            lock (_gate)
            {
                if (_stopped.IsCancellationRequested) { conn.Dispose(); return; }
                _connections.Add(conn);
            }
            _ = ServeAsync(conn);
        }
    }

    /// <summary>One connection: requests and replies in turn, until it turns into an event or console stream, or closes.</summary>
    private async Task ServeAsync(Socket conn)
    {
        var stream = new NetworkStream(conn, ownsSocket: true);
        var ct = _stopped.Token;
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
                        await machine.ShutdownAsync().ConfigureAwait(false);
                        await WorkerFraming.WriteAsync(stream, new WorkerMessage { Status = machine.Status() }, CancellationToken.None).ConfigureAwait(false);
                        onShutdownRequested("requested by the daemon"); // the reply is out: the worker goes
                        return;
                    case WorkerRequest.RequestOneofCase.Metrics:
                        // Counters only: no turn in the machine's queue, so a slow stop or snapshot does not hold a scrape.
                        await WorkerFraming.WriteAsync(stream, new WorkerMessage { MachineMetrics = WorkerMetrics.Read(machine.CurrentVm) }, ct).ConfigureAwait(false);
                        break;
                    default:
                        long received = Stopwatch.GetTimestamp(), turn = 0;
                        var reply = await machine.ExclusiveAsync(() =>
                        {
                            turn = Stopwatch.GetTimestamp();
                            return HandleAsync(request);
                        }).ConfigureAwait(false);
                        if (request.Traceparent.Length > 0) reply.Timing = Timing(received, turn, Stopwatch.GetTimestamp());
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

    /// <summary>
    /// The worker's time for a traced request (WorkerRequest.traceparent; the daemon makes the spans): its wait for the
    /// machine's turn (another request's, such as a stop's) and the machine's work.
    /// </summary>
    private static WorkerTiming Timing(long received, long turn, long done)
    {
        static ulong Us(long from, long to) => to > from ? (ulong)(Stopwatch.GetElapsedTime(from, to).Ticks / 10) : 0;
        var timing = new WorkerTiming { HandledUs = Us(received, done) };
        if (turn > received + Stopwatch.Frequency / 100_000) // 10 µs: a wait worth showing
            timing.Phases.Add(new WorkerPhase { Name = "worker queue", StartUs = 0, DurationUs = Us(received, turn) });
        timing.Phases.Add(new WorkerPhase { Name = "worker machine", StartUs = Us(received, turn), DurationUs = Us(turn, done) });
        return timing;
    }

    /// <summary>One request to the machine and its reply: the status (or what the request returns), or a typed error.</summary>
    private async Task<WorkerMessage> HandleAsync(WorkerRequest request)
    {
        try
        {
            switch (request.RequestCase)
            {
                case WorkerRequest.RequestOneofCase.Create: machine.Create(request.Create); break;
                case WorkerRequest.RequestOneofCase.Restore: machine.Restore(request.Restore); break;
                case WorkerRequest.RequestOneofCase.Snapshot: return new WorkerMessage { SnapshotTaken = machine.TakeSnapshot(request.Snapshot) };
                case WorkerRequest.RequestOneofCase.Start: machine.Start(); break;
                case WorkerRequest.RequestOneofCase.Pause: machine.Pause(); break;
                case WorkerRequest.RequestOneofCase.Resume: machine.Resume(); break;
                case WorkerRequest.RequestOneofCase.UpdateRateLimiters: machine.UpdateRateLimiters(request.UpdateRateLimiters); break;
                case WorkerRequest.RequestOneofCase.Stop: await machine.StopAsync(request.Stop).ConfigureAwait(false); break;
                case WorkerRequest.RequestOneofCase.Status: break;
                case WorkerRequest.RequestOneofCase.ConsoleInput: machine.Input(request.ConsoleInput.Span); break;
                default: throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, "", $"unexpected request {request.RequestCase}");
            }
            return new WorkerMessage { Status = machine.Status() };
        }
        catch (WorkerFailure e)
        {
            return new WorkerMessage { Error = e.ToWire() };
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            WorkerLog.RequestFailed(logger, e, machine.Id, request.RequestCase);
            return new WorkerMessage { Error = new WorkerError { Code = WorkerErrorCode.WorkerErrorInternal, Message = $"{e.GetType().Name}: {e.Message}" } };
        }
    }

    /// <summary>The connection becomes an event stream: the current status, then every change, until it closes.</summary>
    private async Task StreamEventsAsync(NetworkStream stream, CancellationToken ct)
    {
        var events = machine.Subscribe();
        try
        {
            await foreach (var ev in events.ReadAllAsync(ct).ConfigureAwait(false))
                await WorkerFraming.WriteAsync(stream, new WorkerMessage { Event = ev }, ct).ConfigureAwait(false);
        }
        finally
        {
            machine.Unsubscribe(events);
        }
    }

    /// <summary>The connection becomes a console session: output out (after the history, with replay), input in.</summary>
    private async Task StreamConsoleAsync(NetworkStream stream, bool replay, CancellationToken ct)
    {
        using var reader = machine.Console.Attach(replay);
        using var done = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // Input arrives on the same connection; EOF from the daemon ends the whole console session.
        var inputs = Task.Run(async () =>
        {
            try
            {
                while (await WorkerFraming.ReadAsync(stream, WorkerRequest.Parser, done.Token).ConfigureAwait(false) is { } req)
                    if (req.RequestCase == WorkerRequest.RequestOneofCase.ConsoleInput)
                    {
                        try { machine.Input(req.ConsoleInput.Span); }
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
                int off = 0;
                do
                {
                    int n = Math.Min(ConsoleChunkBytes, data.Length - off);
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
}
