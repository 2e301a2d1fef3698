using System.Net.Sockets;
using System.Threading.Channels;
using FireSharp.Agent.Interop;
using FireSharp.Agent.Transport;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Google.Protobuf;

using FireSharp.Framing;

namespace FireSharp.Agent.Server;

/// <summary>
/// One host connection. A reader task turns frames into requests (answering malformed ones
/// itself) and queues them; requests are handled one at a time, in order. The reader keeps
/// reading while a request runs, so a client that goes away is noticed at once.
/// </summary>
internal sealed class AgentConnection : IAsyncDisposable
{
    private readonly SocketStream _stream;
    private readonly AgentContext _context;
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    // Writes stop when the connection breaks or the agent stops.
    private readonly CancellationTokenSource _broken;
    // Running requests stop when the client's side ends (EOF) or the connection breaks.
    private readonly CancellationTokenSource _clientGone;

    /// <summary>Requests that may wait behind the running one (pipelining).</summary>
    public const int MaxQueuedRequests = 8;

    public AgentConnection(SocketStream stream, AgentContext context)
    {
        _stream = stream;
        _context = context;
        _reader = new FrameReader(stream, AgentProtocol.MaxFrameBytes);
        _writer = new FrameWriter(stream, AgentProtocol.MaxFrameBytes);
        _broken = CancellationTokenSource.CreateLinkedTokenSource(context.Stopping.Token);
        _clientGone = CancellationTokenSource.CreateLinkedTokenSource(_broken.Token);
    }

    public AgentContext Context => _context;

    /// <summary>Cancelled when the client closed its side or the connection broke.</summary>
    public CancellationToken ClientGone => _clientGone.Token;

    public async Task RunAsync()
    {
        var requests = Channel.CreateBounded<(Request Request, long ReceivedAt)>(MaxQueuedRequests);
        var reading = ReadLoopAsync(requests.Writer);
        try
        {
            await foreach (var (request, receivedAt) in requests.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                if (_broken.IsCancellationRequested) break;
                await DispatchAsync(request, receivedAt).ConfigureAwait(false);
            }
        }
        finally
        {
            _broken.Cancel();
            await reading.ConfigureAwait(false);
        }
    }

    private async Task ReadLoopAsync(ChannelWriter<(Request, long)> requests)
    {
        try
        {
            while (true)
            {
                var result = await _reader.ReadAsync(_broken.Token).ConfigureAwait(false);
                long receivedAt = System.Diagnostics.Stopwatch.GetTimestamp();
                switch (result.Status)
                {
                    case FrameStatus.Frame:
                        if (!Frames.TryParse(result.Payload.Span, Request.Parser, out var request, out var error))
                        {
                            Log.Debug("malformed frame: " + error);
                            await SendErrorAsync(0, ErrorCode.MalformedFrame, "malformed frame: " + error).ConfigureAwait(false);
                            continue;
                        }
                        // Never wait for room: the reader must keep reading to notice a client that leaves.
                        if (!requests.TryWrite((request!, receivedAt)))
                            await SendErrorAsync(request!.Id, ErrorCode.ResourceExhausted,
                                $"more than {MaxQueuedRequests} requests are waiting on this connection").ConfigureAwait(false);
                        break;
                    case FrameStatus.TooLarge:
                        await SendErrorAsync(0, ErrorCode.FrameTooLarge,
                            $"frame of {result.DeclaredLength} bytes exceeds the {AgentProtocol.MaxFrameBytes}-byte limit; closing the connection").ConfigureAwait(false);
                        _broken.Cancel();
                        return;
                    default: // EndOfStream, Truncated
                        return;
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException or ChannelClosedException)
        {
        }
        finally
        {
            _clientGone.Cancel();
            requests.TryComplete();
        }
    }

    /// <summary>Sends one response; false (and the connection marked broken) if it cannot.</summary>
    public async ValueTask<bool> SendAsync(Response response)
    {
        try
        {
            await _writer.WriteAsync(response, _broken.Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            _broken.Cancel();
            return false;
        }
    }

    public ValueTask<bool> SendErrorAsync(ulong id, ErrorCode code, string message) =>
        SendAsync(new Response { Id = id, Error = new Error { Code = code, Message = message } });

    private async Task DispatchAsync(Request request, long receivedAt)
    {
        ulong id = request.Id;
        try
        {
            switch (request.BodyCase)
            {
                case Request.BodyOneofCase.Hello:
                    await HelloAsync(id, request.Hello).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.Ping:
                    await SendAsync(new Response { Id = id, Pong = new PingReply { Payload = request.Ping.Payload, UptimeUs = Native.BootTimeMicros() } }).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.Exec:
                    await ExecHandler.RunAsync(this, id, request.Exec).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.WriteFile:
                    await SendAsync(FileHandler.Write(id, request.WriteFile)).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.ReadFile:
                    await SendAsync(FileHandler.Read(id, request.ReadFile)).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.Shutdown:
                    await ShutdownAsync(id, request.Shutdown).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.Reseed:
                    await SendAsync(ReseedHandler.Handle(id, request.Reseed)).ConfigureAwait(false);
                    break;
                case Request.BodyOneofCase.FunctionInit or Request.BodyOneofCase.Invoke or Request.BodyOneofCase.FunctionShutdown:
                    await FunctionRequestHandler.HandleAsync(this, request, receivedAt).ConfigureAwait(false);
                    break;
                default:
                    await SendErrorAsync(id, ErrorCode.UnknownRequest,
                        $"unknown request type (this agent speaks protocol version {AgentProtocol.Version})").ConfigureAwait(false);
                    break;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log.Error($"request {id} ({request.BodyCase}): {e}");
            await SendErrorAsync(id, ErrorCode.Internal, $"{e.GetType().Name}: {e.Message}").ConfigureAwait(false);
        }
    }

    private async Task HelloAsync(ulong id, Hello hello)
    {
        if (hello.ProtocolVersion < 1)
        {
            await SendErrorAsync(id, ErrorCode.UnsupportedVersion,
                $"protocol version {hello.ProtocolVersion} is not supported; this agent speaks 1 to {AgentProtocol.Version}").ConfigureAwait(false);
            return;
        }
        Log.Debug($"hello from '{hello.Client}' (protocol {hello.ProtocolVersion})");
        await SendAsync(new Response
        {
            Id = id,
            Hello = new HelloReply { ProtocolVersion = Math.Min(hello.ProtocolVersion, AgentProtocol.Version), Agent = _context.CurrentInfo() },
        }).ConfigureAwait(false);
    }

    private async Task ShutdownAsync(ulong id, ShutdownRequest request)
    {
        if (!await SendAsync(new Response { Id = id, Shutdown = new ShutdownReply() }).ConfigureAwait(false)) return;
        // Give the host up to a second to read the reply and close (its EOF proves delivery): over
        // vsock, bytes still queued in the guest are lost when the machine powers off.
        try { await Task.Delay(TimeSpan.FromSeconds(1), _clientGone.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        await _context.ShutdownAsync(request.Mode).ConfigureAwait(false);
    }

    /// <summary>Wraps a buffer for an output frame without copying (it is written before reuse).</summary>
    public static ByteString Wrap(ReadOnlyMemory<byte> data) => UnsafeByteOperations.UnsafeWrap(data);

    public async ValueTask DisposeAsync()
    {
        _broken.Cancel();
        await _stream.DisposeAsync().ConfigureAwait(false);
        _reader.Dispose();
        _writer.Dispose();
        _clientGone.Dispose();
        _broken.Dispose();
    }
}
