using System.Net.Sockets;
using System.Text;

namespace FireSharp.Daemon.Agent;

/// <summary>
/// Firecracker-style hybrid vsock on the host: one Unix socket per VM. The host connects to it,
/// writes <c>CONNECT &lt;port&gt;\n</c> and reads <c>OK &lt;hostport&gt;\n</c>; the stream then
/// belongs to that guest port. A guest connection to CID 2 port P arrives at <c>&lt;uds&gt;_P</c>.
/// </summary>
public static class HybridVsock
{
    /// <summary>The longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).</summary>
    public const int MaxUnixPathBytes = 107;

    /// <summary>Where guest connections to host port <paramref name="port"/> arrive: <c>&lt;uds&gt;_&lt;port&gt;</c>.</summary>
    public static string GuestInitiatedPath(string udsPath, uint port) => $"{udsPath}_{port}";

    /// <summary>Connects to a Unix stream socket; failures become <see cref="AgentFailure.ConnectFailed"/>.</summary>
    public static async Task<Socket> ConnectUnixAsync(string path, CancellationToken cancellationToken = default)
    {
        CheckPath(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new AgentException(AgentFailure.ConnectFailed, $"cannot connect to {path}: {e.Message}", inner: e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Connects to guest port <paramref name="port"/> through the VM's hybrid vsock socket and
    /// returns the stream after the <c>OK</c> line.
    /// </summary>
    public static async Task<Stream> ConnectAsync(string udsPath, uint port, CancellationToken cancellationToken = default)
    {
        var socket = await ConnectUnixAsync(udsPath, cancellationToken).ConfigureAwait(false);
        var stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"CONNECT {port}\n"), cancellationToken).ConfigureAwait(false);
            // Byte by byte: nothing after the newline may be consumed, it belongs to the agent.
            var line = new StringBuilder();
            var one = new byte[1];
            while (true)
            {
                int n = await stream.ReadAsync(one, cancellationToken).ConfigureAwait(false);
                if (n == 0)
                    throw new AgentException(AgentFailure.ConnectFailed,
                        $"hybrid vsock {udsPath}: the VMM closed the connection after CONNECT {port} (is anything listening on guest port {port}?)");
                if (one[0] == '\n') break;
                if (line.Length >= 64 || one[0] < 0x20 || one[0] > 0x7e)
                    throw new AgentException(AgentFailure.ConnectFailed, $"hybrid vsock {udsPath}: not an 'OK <port>' line after CONNECT {port}: '{line}'");
                line.Append((char)one[0]);
            }
            var text = line.ToString();
            if (!text.StartsWith("OK ", StringComparison.Ordinal) || !uint.TryParse(text.AsSpan(3), out _))
                throw new AgentException(AgentFailure.ConnectFailed, $"hybrid vsock {udsPath}: expected 'OK <port>' after CONNECT {port}, got '{text}'");
            return stream;
        }
        catch (IOException e)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw new AgentException(AgentFailure.ConnectFailed, $"hybrid vsock {udsPath}: {e.Message}", inner: e);
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    internal static void CheckPath(string path)
    {
        if (string.IsNullOrEmpty(path)) throw new AgentException(AgentFailure.ConnectFailed, "the Unix socket path is empty");
        if (Encoding.UTF8.GetByteCount(path) > MaxUnixPathBytes)
            throw new AgentException(AgentFailure.ConnectFailed, $"Unix socket path {path} is longer than {MaxUnixPathBytes} bytes");
    }
}
