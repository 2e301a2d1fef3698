// Just over 400 lines: one client for every request of the agent protocol (hello, exec, files in chunks, functions, reseed) over one connection; each request is a short method on the shared request/reply plumbing and its span
using System.Buffers;
using System.Diagnostics;
using FireSharp.Daemon.Tracing;
using System.Net.Sockets;
using FireSharp.Proto.Agent;
using Google.Protobuf;

using FireSharp.Agent.Protocol;

using FireSharp.Framing;

namespace FireSharp.Daemon.Agent;

/// <summary>
/// A connection to <c>firesharp-agent</c> (src/Proto/agent.proto). Calls on one client run one
/// at a time (they queue); open more clients for concurrent calls. Cancelling a call aborts the
/// connection (the agent then kills a running Exec) and the client is unusable afterwards.
/// </summary>
public sealed class AgentClient : IAsyncDisposable, IDisposable
{
    private readonly Stream _stream;
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private ulong _lastId;
    private volatile bool _closed;

    /// <summary>Speaks the protocol over <paramref name="stream"/> (owned and disposed by the client). Sends nothing yet.</summary>
    public AgentClient(Stream stream)
    {
        _stream = stream;
        _reader = new FrameReader(stream, AgentProtocol.MaxFrameBytes);
        _writer = new FrameWriter(stream, AgentProtocol.MaxFrameBytes);
    }

    /// <summary>The agent, as it described itself in <see cref="HelloAsync"/>.</summary>
    public AgentInfo? Agent { get; private set; }

    /// <summary>The protocol version agreed in <see cref="HelloAsync"/> (0 before).</summary>
    public uint ProtocolVersion { get; private set; }

    /// <summary>Connects to an agent listening on a Unix socket (host tests) and says Hello.</summary>
    public static async Task<AgentClient> ConnectUnixAsync(string path, CancellationToken cancellationToken = default)
    {
        var socket = await HybridVsock.ConnectUnixAsync(path, cancellationToken).ConfigureAwait(false);
        return await StartAsync(new NetworkStream(socket, ownsSocket: true), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Connects to the agent in a VM through its hybrid vsock socket (<c>CONNECT 52</c>) and says Hello.
    /// </summary>
    public static async Task<AgentClient> ConnectHybridVsockAsync(string udsPath, uint port = AgentProtocol.DefaultPort, CancellationToken cancellationToken = default)
    {
        var stream = await HybridVsock.ConnectAsync(udsPath, port, cancellationToken).ConfigureAwait(false);
        return await StartAsync(stream, cancellationToken).ConfigureAwait(false);
    }

    private static async Task<AgentClient> StartAsync(Stream stream, CancellationToken cancellationToken)
    {
        var client = new AgentClient(stream);
        try
        {
            await client.HelloAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Agrees on the protocol version and learns about the agent.</summary>
    public async Task<AgentInfo> HelloAsync(string client = "firesharp", uint protocolVersion = AgentProtocol.Version, CancellationToken cancellationToken = default)
    {
        HelloReply? reply = null;
        await CallAsync(new Request { Hello = new Hello { ProtocolVersion = protocolVersion, Client = client } }, r =>
        {
            reply = Expect(r, Response.BodyOneofCase.Hello).Hello;
            return new ValueTask<bool>(true);
        }, cancellationToken).ConfigureAwait(false);
        Agent = reply!.Agent;
        ProtocolVersion = reply.ProtocolVersion;
        return reply.Agent;
    }

    /// <summary>A round trip; the reply echoes <paramref name="payload"/> and carries the guest's uptime.</summary>
    public async Task<PingReply> PingAsync(ReadOnlyMemory<byte> payload = default, CancellationToken cancellationToken = default)
    {
        return (await RequestAsync(new Request { Ping = new PingRequest { Payload = ByteString.CopyFrom(payload.Span) } }, Response.BodyOneofCase.Pong, cancellationToken).ConfigureAwait(false)).Pong;
    }

    /// <summary>Runs a command and returns how it ended with its output (each stream kept up to <see cref="AgentCommand.MaxCapturedBytes"/>).</summary>
    public Task<AgentExecResult> ExecAsync(AgentCommand command, CancellationToken cancellationToken = default) =>
        ExecAsync(command, null, cancellationToken);

    /// <summary>
    /// Runs a command, handing each output chunk to <paramref name="onOutput"/> as it arrives (the
    /// agent waits while the handler runs, so a slow handler slows the command, never memory).
    /// The result still keeps up to <see cref="AgentCommand.MaxCapturedBytes"/> of each stream.
    /// A command that cannot start throws <see cref="AgentException"/> with <see cref="ErrorCode.ExecFailed"/>.
    /// </summary>
    public async Task<AgentExecResult> ExecAsync(AgentCommand command, AgentOutputHandler? onOutput, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentOutOfRangeException.ThrowIfNegative(command.MaxCapturedBytes);
        var stdout = new BoundedCapture(command.MaxCapturedBytes);
        var stderr = new BoundedCapture(command.MaxCapturedBytes);
        int pid = 0;
        ExecExit? exit = null;
        await CallAsync(new Request { Exec = command.ToRequest() }, async r =>
        {
            switch (r.BodyCase)
            {
                case Response.BodyOneofCase.ExecStarted:
                    pid = r.ExecStarted.Pid;
                    return false;
                case Response.BodyOneofCase.ExecOutput:
                    var data = r.ExecOutput.Data.Memory;
                    (r.ExecOutput.Stream == OutputStream.Stderr ? stderr : stdout).Add(data.Span);
                    if (onOutput is not null) await onOutput(r.ExecOutput.Stream, data, cancellationToken).ConfigureAwait(false);
                    return false;
                case Response.BodyOneofCase.ExecExit:
                    exit = r.ExecExit;
                    return true;
                default:
                    throw Unexpected(r, "exec_started, exec_output or exec_exit");
            }
        }, cancellationToken).ConfigureAwait(false);
        return new AgentExecResult
        {
            Pid = pid,
            ExitCode = exit!.StatusCase == ExecExit.StatusOneofCase.ExitCode ? exit.ExitCode : null,
            Signal = exit.StatusCase == ExecExit.StatusOneofCase.Signal ? exit.Signal : null,
            TimedOut = exit.TimedOut,
            CoreDumped = exit.CoreDumped,
            Stdout = stdout.ToArray(),
            Stderr = stderr.ToArray(),
            StdoutBytes = (long)exit.StdoutBytes,
            StderrBytes = (long)exit.StderrBytes,
            Duration = TimeSpan.FromTicks((long)exit.DurationUs * 10),
        };
    }

    /// <summary>Reads a file of at most <see cref="AgentProtocol.MaxFileBytes"/> bytes.</summary>
    public async Task<byte[]> ReadFileAsync(string path, CancellationToken cancellationToken = default) =>
        (await ReadFileChunkAsync(new ReadFileRequest { Path = path }, cancellationToken).ConfigureAwait(false)).Data.ToByteArray();

    /// <summary>
    /// One ReadFile: the whole file (length 0), or a chunk of at most length bytes from offset (its reply says
    /// whether the file ends there). <see cref="AgentFileTransfer"/> reads files of any size with it.
    /// </summary>
    public async Task<ReadFileReply> ReadFileChunkAsync(ReadFileRequest request, CancellationToken cancellationToken = default) =>
        (await RequestAsync(new Request { ReadFile = request }, Response.BodyOneofCase.ReadFile, cancellationToken).ConfigureAwait(false)).ReadFile;

    /// <summary>
    /// Writes a file of at most <see cref="AgentProtocol.MaxFileBytes"/> bytes (in place; a new
    /// file gets <paramref name="mode"/>, 0 meaning 0644).
    /// </summary>
    public Task WriteFileAsync(string path, ReadOnlyMemory<byte> data, uint mode = 0, bool createParents = false, CancellationToken cancellationToken = default) =>
        WriteFileChunkAsync(new WriteFileRequest { Path = path, Data = ByteString.CopyFrom(data.Span), Mode = mode, CreateParents = createParents }, cancellationToken);

    /// <summary>One WriteFile of at most <see cref="AgentProtocol.MaxFileBytes"/> bytes (at request.offset into the file when above 0).</summary>
    public async Task WriteFileChunkAsync(WriteFileRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Data.Length > AgentProtocol.MaxFileBytes)
            throw new AgentException(AgentFailure.Remote, $"{request.Data.Length} bytes exceed the {AgentProtocol.MaxFileBytes}-byte limit of WriteFile", ErrorCode.FileTooLarge);
        await RequestAsync(new Request { WriteFile = request }, Response.BodyOneofCase.WriteFile, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A request answered by exactly one response of kind <paramref name="body"/>.</summary>
    private async Task<Response> RequestAsync(Request request, Response.BodyOneofCase body, CancellationToken cancellationToken)
    {
        Response? reply = null;
        await CallAsync(request, r =>
        {
            reply = Expect(r, body);
            return new ValueTask<bool>(true);
        }, cancellationToken).ConfigureAwait(false);
        return reply!;
    }

    /// <summary>
    /// Asks the agent to sync, unmount and power off (or reboot). Returns once the agent has
    /// accepted; the client is closed afterwards (closing tells the agent the reply arrived).
    /// </summary>
    public async Task ShutdownAsync(ShutdownMode mode = ShutdownMode.PowerOff, CancellationToken cancellationToken = default)
    {
        await CallAsync(new Request { Shutdown = new ShutdownRequest { Mode = mode } }, r =>
        {
            Expect(r, Response.BodyOneofCase.Shutdown);
            return new ValueTask<bool>(true);
        }, cancellationToken).ConfigureAwait(false);
        await DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// After a snapshot restore: gives the guest kernel <paramref name="entropy"/> (16-512 bytes from the host's
    /// CSPRNG; null = 64 fresh bytes) and reseeds its CRNG, so clones of one snapshot stop sharing random
    /// state; sets the hostname when given. Returns whether the CRNG reseed itself succeeded. An agent without
    /// it throws <see cref="AgentException"/> with <see cref="ErrorCode.UnknownRequest"/>.
    /// </summary>
    public async Task<bool> ReseedAsync(ReadOnlyMemory<byte>? entropy = null, string? hostname = null, CancellationToken cancellationToken = default)
    {
        var bytes = entropy ?? System.Security.Cryptography.RandomNumberGenerator.GetBytes(64);
        ReseedReply? reply = null;
        await CallAsync(new Request { Reseed = new ReseedRequest { Entropy = ByteString.CopyFrom(bytes.Span), Hostname = hostname ?? "" } }, r =>
        {
            reply = Expect(r, Response.BodyOneofCase.Reseed).Reseed;
            return new ValueTask<bool>(true);
        }, cancellationToken).ConfigureAwait(false);
        return reply!.Reseeded;
    }

    /// <summary>
    /// Starts a function (protocol version 2): the agent starts its Runtime API server, the
    /// extensions and the runtime's bootstrap, and replies when the runtime is ready for its first
    /// event or init failed (<see cref="FunctionInitReply.Ok"/> false, with Lambda's error type).
    /// An agent of version 1 throws <see cref="AgentException"/> with <see cref="ErrorCode.UnknownRequest"/>.
    /// </summary>
    public async Task<FunctionInitReply> InitFunctionAsync(FunctionInitRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return (await RequestAsync(new Request { FunctionInit = request }, Response.BodyOneofCase.FunctionInit, ct).ConfigureAwait(false)).FunctionInit;
    }

    /// <summary>
    /// Runs one invocation of the function started by <see cref="InitFunctionAsync"/> and returns
    /// how it ended (success, function error, timeout, runtime exit, out of memory).
    /// </summary>
    /// <remarks>
    /// Traced, the request carries the "agent invoke" span's traceparent, and the guest's own time
    /// (<see cref="InvokeReply.Timings"/>) becomes a "guest" child and attributes of the span: see <see cref="AgentTracing"/>.
    /// </remarks>
    public async Task<InvokeReply> InvokeFunctionAsync(InvokeRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var span = AgentTracing.Start(Request.BodyOneofCase.Invoke);
        request.Traceparent = DaemonTracing.Traceparent(span);
        InvokeReply? reply = null;
        DateTime replied = default;
        await CallAsync(new Request { Invoke = request }, r =>
        {
            replied = DateTime.UtcNow;
            reply = Expect(r, Response.BodyOneofCase.Invoke).Invoke;
            return new ValueTask<bool>(true);
        }, span, ct).ConfigureAwait(false);
        AgentTracing.RecordGuest(span, replied, reply!.Timings);
        return reply!;
    }

    /// <summary>
    /// Stops the function: extensions get SHUTDOWN, the runtime SIGTERM then SIGKILL, and the
    /// Runtime API server stops.
    /// </summary>
    public async Task<FunctionShutdownReply> ShutdownFunctionAsync(FunctionShutdownRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return (await RequestAsync(new Request { FunctionShutdown = request }, Response.BodyOneofCase.FunctionShutdown, ct).ConfigureAwait(false)).FunctionShutdown;
    }

    /// <summary>
    /// Sends <paramref name="request"/> and feeds its responses to <paramref name="onResponse"/>
    /// until it returns true. An Error response throws <see cref="AgentFailure.Remote"/> (the
    /// connection stays usable); anything else that goes wrong closes the client.
    /// </summary>
    private Task CallAsync(Request request, Func<Response, ValueTask<bool>> onResponse, CancellationToken cancellationToken) =>
        CallAsync(request, onResponse, null, cancellationToken);

    /// <param name="span">The caller's span for this request; null: an "agent &lt;request&gt;" span of its own (when traced).</param>
    private async Task CallAsync(Request request, Func<Response, ValueTask<bool>> onResponse, Activity? span, CancellationToken cancellationToken)
    {
        using var own = span is null ? AgentTracing.Start(request.BodyCase) : null;
        span ??= own;
        try
        {
            await CallUntracedAsync(request, onResponse, span, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            DaemonTracing.Fail(span, e);
            throw;
        }
    }

    private async Task CallUntracedAsync(Request request, Func<Response, ValueTask<bool>> onResponse, Activity? span, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_closed) throw new AgentException(AgentFailure.ConnectionLost, "the agent connection is closed");
            request.Id = ++_lastId;
            // Abort on cancellation: the agent notices the connection closing and stops the request.
            using var abort = cancellationToken.Register(Close);
            try
            {
                await _writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
                span?.AddEvent(new ActivityEvent(AgentTracing.RequestSentEvent));
                while (true)
                {
                    var frame = await _reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                    switch (frame.Status)
                    {
                        case FrameStatus.Frame:
                            break;
                        case FrameStatus.TooLarge:
                            Close();
                            throw new AgentException(AgentFailure.ProtocolError, $"the agent sent a frame of {frame.DeclaredLength} bytes");
                        default:
                            Close();
                            throw new AgentException(AgentFailure.ConnectionLost, $"the agent closed the connection during {request.BodyCase}");
                    }
                    if (!Frames.TryParse(frame.Payload.Span, Response.Parser, out var response, out var error))
                    {
                        Close();
                        throw new AgentException(AgentFailure.ProtocolError, "malformed response from the agent: " + error);
                    }
                    if (response!.Id != request.Id)
                    {
                        Close();
                        var what = response.BodyCase == Response.BodyOneofCase.Error ? $" ({response.Error.Code}: {response.Error.Message})" : "";
                        throw new AgentException(AgentFailure.ProtocolError, $"response for request {response.Id} while waiting for {request.Id}{what}");
                    }
                    if (response.BodyCase == Response.BodyOneofCase.Error)
                        throw new AgentException(AgentFailure.Remote, $"{request.BodyCase}: {response.Error.Message}", response.Error.Code);
                    if (await onResponse(response).ConfigureAwait(false))
                    {
                        span?.AddEvent(new ActivityEvent(AgentTracing.ReplyReceivedEvent));
                        return;
                    }
                }
            }
            catch (Exception e) when (cancellationToken.IsCancellationRequested && e is not AgentException { Failure: AgentFailure.Remote })
            {
                Close();
                throw new OperationCanceledException($"{request.BodyCase} was cancelled; the agent connection is closed", e, cancellationToken);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
            {
                Close();
                throw new AgentException(AgentFailure.ConnectionLost, $"{request.BodyCase}: the agent connection broke: {e.Message}", inner: e);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private static Response Expect(Response response, Response.BodyOneofCase body) =>
        response.BodyCase == body ? response : throw Unexpected(response, body.ToString());

    private static AgentException Unexpected(Response response, string expected) =>
        new(AgentFailure.ProtocolError, $"expected {expected} from the agent, got {response.BodyCase}");

    private void Close()
    {
        if (_closed) return;
        _closed = true;
        _stream.Dispose();
    }

    /// <summary>
    /// Closes the connection and waits until the agent has seen it end: our side is half-closed, the agent reads
    /// EOF, ends the connection and closes its socket, and we read until its side is closed too. True once the
    /// agent closed its side; false when the stream cannot half-close (not a socket) or the connection broke or
    /// was closed already. Cancelling stops the wait. The client is closed afterwards in every case.
    /// </summary>
    public async Task<bool> CloseAndWaitForAgentAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_closed || _stream is not NetworkStream { Socket: var socket }) return false;
            socket.Shutdown(SocketShutdown.Send);
            var sink = new byte[256];
            // The agent sends nothing unasked: whatever arrives is discarded until its end of stream.
            while (await _stream.ReadAsync(sink, cancellationToken).ConfigureAwait(false) > 0) { }
            return true;
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            Close();
            _gate.Release();
        }
    }

    /// <summary>Closes the connection. (The frame buffers are left to the GC: a call may still be unwinding.)</summary>
    public void Dispose() => Close();

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Keeps the first <c>limit</c> bytes of a stream.</summary>
    private sealed class BoundedCapture(int limit)
    {
        private readonly ArrayBufferWriter<byte> _buffer = new();

        public void Add(ReadOnlySpan<byte> data)
        {
            int room = limit - _buffer.WrittenCount;
            if (room > 0) _buffer.Write(data[..Math.Min(room, data.Length)]);
        }

        public byte[] ToArray() => _buffer.WrittenSpan.ToArray();
    }
}
