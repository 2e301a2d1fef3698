using System.Net.Sockets;
using FireSharp.Proto.Agent;

using FireSharp.Agent.Protocol;

using FireSharp.Framing;

namespace FireSharp.Daemon.Agent;

/// <summary>
/// Waits for the agent's readiness report: a Unix socket at <c>&lt;uds&gt;_53</c> (see
/// <see cref="HybridVsock.GuestInitiatedPath"/>), where the VMM delivers the agent's connection
/// to vsock CID 2 port 53. The agent sends one Response frame with <c>ready</c> and closes.
/// Connections that send anything else are dropped and waiting goes on.
/// </summary>
public sealed class AgentReadyListener : IDisposable
{
    private readonly Socket _socket;

    private AgentReadyListener(string path, Socket socket)
    {
        Path = path;
        _socket = socket;
    }

    public string Path { get; }

    /// <summary>Listens at <paramref name="path"/>, which must not exist.</summary>
    public static AgentReadyListener Bind(string path)
    {
        HybridVsock.CheckPath(path);
        if (File.Exists(path) || Directory.Exists(path))
            throw new AgentException(AgentFailure.ConnectFailed, $"ready socket path {path} already exists");
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            socket.Listen(8);
            return new AgentReadyListener(path, socket);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new AgentException(AgentFailure.ConnectFailed, $"cannot listen on {path}: {e.Message}", inner: e);
        }
    }

    /// <summary>The next valid Ready report.</summary>
    public async Task<Ready> WaitAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            using var connection = await _socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
            await using var stream = new NetworkStream(connection, ownsSocket: false);
            using var reader = new FrameReader(stream, AgentProtocol.MaxFrameBytes);
            using var perConnection = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            perConnection.CancelAfter(TimeSpan.FromSeconds(5));
            try
            {
                var frame = await reader.ReadAsync(perConnection.Token).ConfigureAwait(false);
                if (frame.Status == FrameStatus.Frame
                    && Frames.TryParse(frame.Payload.Span, Response.Parser, out var response, out _)
                    && response!.BodyCase == Response.BodyOneofCase.Ready)
                    return response.Ready;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { }
            catch (IOException) { }
            catch (SocketException) { }
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        try { File.Delete(Path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
