using System.Diagnostics;
using FireSharp.Daemon.Tracing;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using FireSharp.Proto.Worker;

using FireSharp.Worker.Protocol;

namespace FireSharp.Daemon.Workers;

/// <summary>
/// The daemon's side of one worker's socket. Requests share one connection, one at a time; a request
/// that is cancelled (or fails on I/O) drops that connection, since its reply may still come, and the
/// next request connects again. Event and console streams each get a connection of their own.
/// </summary>
public sealed class WorkerClient(string socketPath) : IAsyncDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private NetworkStream? _control;
    private bool _disposed;

    public string SocketPath { get; } = socketPath;

    /// <summary>Connects to a worker's socket.</summary>
    public static async Task<NetworkStream> ConnectAsync(string path, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends one request and returns the worker's status. A worker error becomes a
    /// <see cref="VmApiException"/>; a broken connection becomes Unavailable.
    /// </summary>
    public async Task<WorkerStatus> CallAsync(WorkerRequest request, CancellationToken ct)
    {
        var reply = await CallForMessageAsync(request, ct).ConfigureAwait(false);
        return reply.MessageCase == WorkerMessage.MessageOneofCase.Status ? reply.Status
            : throw new InvalidDataException($"worker replied with {reply.MessageCase}");
    }

    /// <summary>Takes a snapshot in the worker (see <see cref="TakeSnapshot"/>); errors as in <see cref="CallAsync"/>.</summary>
    public async Task<SnapshotTaken> SnapshotAsync(TakeSnapshot request, CancellationToken ct)
    {
        var reply = await CallForMessageAsync(new WorkerRequest { Snapshot = request }, ct).ConfigureAwait(false);
        return reply.MessageCase == WorkerMessage.MessageOneofCase.SnapshotTaken ? reply.SnapshotTaken
            : throw new InvalidDataException($"worker replied with {reply.MessageCase}");
    }

    /// <summary>
    /// The machine's counters, on a connection of its own (so a long request on the shared one does not hold it),
    /// closed afterwards. Throws <see cref="OperationCanceledException"/> on <paramref name="ct"/> and the usual
    /// socket and framing exceptions when the worker is gone or garbles its reply.
    /// </summary>
    public async Task<MachineMetrics> MetricsAsync(CancellationToken ct)
    {
        await using var stream = await ConnectAsync(SocketPath, ct).ConfigureAwait(false);
        await WorkerFraming.WriteAsync(stream, new WorkerRequest { Metrics = new Empty() }, ct).ConfigureAwait(false);
        var reply = await WorkerFraming.ReadAsync(stream, WorkerMessage.Parser, ct).ConfigureAwait(false);
        return reply?.MessageCase == WorkerMessage.MessageOneofCase.MachineMetrics ? reply.MachineMetrics
            : throw new InvalidDataException($"worker replied with {reply?.MessageCase.ToString() ?? "nothing"}");
    }

    /// <summary>Sends one request and returns the worker's reply, which is not an error (errors are thrown).</summary>
    /// <remarks>
    /// Traced (a "worker &lt;request&gt;" client span, its traceparent in the request), the worker's own time comes
    /// back in the reply and becomes a "worker handle &lt;request&gt;" child (<see cref="DaemonTracing.RecordRemote"/>).
    /// </remarks>
    private async Task<WorkerMessage> CallForMessageAsync(WorkerRequest request, CancellationToken ct)
    {
        string kind = DaemonTracing.SnakeCase(request.RequestCase.ToString());
        using var span = DaemonTracing.Start(DaemonTracing.WorkerSpan(kind), ActivityKind.Client);
        span?.SetTag(DaemonTracing.WorkerRequestTag, kind);
        request.Traceparent = DaemonTracing.Traceparent(span);
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            WorkerMessage? reply;
            DateTime sent = default;
            try
            {
                _control ??= await ConnectAsync(SocketPath, ct).ConfigureAwait(false);
                sent = DateTime.UtcNow;
                await WorkerFraming.WriteAsync(_control, request, ct).ConfigureAwait(false);
                reply = await WorkerFraming.ReadAsync(_control, WorkerMessage.Parser, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or InvalidDataException
                                          or Google.Protobuf.InvalidProtocolBufferException)
            {
                DaemonTracing.Fail(span, e);
                await DropControlAsync().ConfigureAwait(false);
                if (e is OperationCanceledException) throw;
                throw VmApiException.Unavailable($"the VM's worker is not answering ({e.Message})");
            }
            if (reply is null)
            {
                span?.SetStatus(ActivityStatusCode.Error, "the worker closed the connection");
                await DropControlAsync().ConfigureAwait(false);
                throw VmApiException.Unavailable("the VM's worker closed the connection");
            }
            if (span is not null && reply.Timing is { } timing)
            {
                var handled = DaemonTracing.FromMicros(timing.HandledUs);
                span.SetTag(DaemonTracing.WorkerHandledTag, (long)timing.HandledUs);
                var transit = DaemonTracing.RecordRemote(span, DaemonTracing.WorkerHandleSpan(kind), sent, DateTime.UtcNow, handled,
                    timing.Phases.Select(p => (p.Name, DaemonTracing.FromMicros(p.StartUs), DaemonTracing.FromMicros(p.DurationUs))));
                if (transit is { } t) span.SetTag(DaemonTracing.TransitTag, DaemonTracing.Micros(t));
            }
            if (reply.MessageCase == WorkerMessage.MessageOneofCase.Error)
            {
                span?.SetStatus(ActivityStatusCode.Error, reply.Error.Message);
                throw ToException(reply.Error);
            }
            return reply;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>The worker's events, starting with its current status; ends when the worker goes away.</summary>
    public async IAsyncEnumerable<WorkerEvent> SubscribeAsync([EnumeratorCancellation] CancellationToken ct)
    {
        await using var stream = await ConnectAsync(SocketPath, ct).ConfigureAwait(false);
        await WorkerFraming.WriteAsync(stream, new WorkerRequest { Subscribe = new Empty() }, ct).ConfigureAwait(false);
        while (true)
        {
            WorkerMessage? message;
            try { message = await WorkerFraming.ReadAsync(stream, WorkerMessage.Parser, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or SocketException or InvalidDataException or Google.Protobuf.InvalidProtocolBufferException)
            {
                yield break;
            }
            if (message is null) yield break;
            if (message.MessageCase == WorkerMessage.MessageOneofCase.Event) yield return message.Event;
        }
    }

    /// <summary>Opens a console session on a connection of its own.</summary>
    public async Task<WorkerConsole> AttachConsoleAsync(bool replay, CancellationToken ct)
    {
        NetworkStream stream;
        try
        {
            stream = await ConnectAsync(SocketPath, ct).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw VmApiException.Unavailable($"the VM's worker is not answering ({e.Message})");
        }
        await WorkerFraming.WriteAsync(stream, new WorkerRequest { Console = new AttachConsole { Replay = replay } }, ct).ConfigureAwait(false);
        return new WorkerConsole(stream);
    }

    internal static Exception ToException(WorkerError error) => error.Code switch
    {
        WorkerErrorCode.WorkerErrorInvalidArgument => new VmApiException(VmErrorKind.InvalidArgument, NullIfEmpty(error.Field), error.Message),
        WorkerErrorCode.WorkerErrorWrongState => new VmApiException(VmErrorKind.WrongState, null, error.Message),
        WorkerErrorCode.WorkerErrorResourceExhausted => new VmApiException(VmErrorKind.ResourceExhausted, NullIfEmpty(error.Field), error.Message),
        WorkerErrorCode.WorkerErrorUnavailable => new VmApiException(VmErrorKind.Unavailable, null, error.Message),
        WorkerErrorCode.WorkerErrorTimeout => new VmApiException(VmErrorKind.Timeout, null, error.Message),
        WorkerErrorCode.WorkerErrorNotFound => new VmApiException(VmErrorKind.NotFound, NullIfEmpty(error.Field), error.Message),
        WorkerErrorCode.WorkerErrorAlreadyExists => new VmApiException(VmErrorKind.AlreadyExists, NullIfEmpty(error.Field), error.Message),
        _ => new InvalidOperationException($"the VM's worker failed: {error.Message}"),
    };

    private static string? NullIfEmpty(string s) => s.Length == 0 ? null : s;

    private async Task DropControlAsync()
    {
        if (_control is null) return;
        await _control.DisposeAsync().ConfigureAwait(false);
        _control = null;
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync().ConfigureAwait(false);
        try
        {
            _disposed = true;
            await DropControlAsync().ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}

/// <summary>One console session with a worker: output chunks, and input sent the other way.</summary>
public sealed class WorkerConsole(NetworkStream stream) : IAsyncDisposable
{
    private readonly SemaphoreSlim _write = new(1, 1);

    /// <summary>Output until the worker ends the session (or the connection breaks).</summary>
    public async IAsyncEnumerable<ConsoleChunk> ReadAllAsync([EnumeratorCancellation] CancellationToken ct)
    {
        while (true)
        {
            WorkerMessage? message;
            try { message = await WorkerFraming.ReadAsync(stream, WorkerMessage.Parser, ct).ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidDataException
                                          or Google.Protobuf.InvalidProtocolBufferException)
            {
                yield break;
            }
            if (message is null) yield break;
            if (message.MessageCase == WorkerMessage.MessageOneofCase.Console) yield return message.Console;
        }
    }

    /// <summary>Sends bytes to the guest's COM1.</summary>
    public async Task SendInputAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (data.IsEmpty) return;
        await _write.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await WorkerFraming.WriteAsync(stream, new WorkerRequest { ConsoleInput = Google.Protobuf.ByteString.CopyFrom(data.Span) }, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            throw VmApiException.Unavailable("the VM's console session ended");
        }
        finally
        {
            _write.Release();
        }
    }

    public ValueTask DisposeAsync() => stream.DisposeAsync();
}
