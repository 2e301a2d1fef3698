using System.Net.Sockets;
using FireSharp.Agent.Transport;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;

using FireSharp.Framing;

namespace FireSharp.Agent.Server;

/// <summary>Accepts connections and serves each on its own task.</summary>
internal sealed class AgentServer(IAgentListener listener, AgentContext context)
{
    public const int MaxConnections = 64;
    private int _connections;

    public async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { break; }
            catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException or System.Threading.Channels.ChannelClosedException)
            {
                if (stop.IsCancellationRequested) break;
                Log.Error($"accept on {listener.Description}: {e.Message}");
                await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            if (Interlocked.Increment(ref _connections) > MaxConnections)
            {
                Interlocked.Decrement(ref _connections);
                _ = RejectAsync(socket);
                continue;
            }
            _ = Task.Run(async () =>
            {
                try
                {
                    await using var connection = new AgentConnection(new SocketStream(socket), context);
                    await connection.RunAsync().ConfigureAwait(false);
                }
                catch (Exception e)
                {
                    Log.Error("connection: " + e);
                }
                finally
                {
                    Interlocked.Decrement(ref _connections);
                }
            }, CancellationToken.None); // an accepted connection is served even if the server is stopping
        }
    }

    private static async Task RejectAsync(Socket socket)
    {
        using var stream = new SocketStream(socket);
        using var writer = new FrameWriter(stream, AgentProtocol.MaxFrameBytes);
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await writer.WriteAsync(new Response
            {
                Error = new Error { Code = ErrorCode.ResourceExhausted, Message = $"the agent serves at most {MaxConnections} connections at once" },
            }, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException) { }
    }
}
