using System.Net.Sockets;
using System.Threading.Channels;
using Tmds.Linux;

namespace FireSharp.Agent.Transport;

/// <summary>Accepts the host's connections: AF_VSOCK in the guest, AF_UNIX for host tests.</summary>
internal interface IAgentListener : IDisposable
{
    string Description { get; }

    /// <summary>The next connection; throws <see cref="OperationCanceledException"/> when cancelled.</summary>
    Task<Socket> AcceptAsync(CancellationToken cancellationToken);

    public static IAgentListener Create(AgentEndpoint endpoint) => endpoint switch
    {
        UnixEndpoint u => new UnixAgentListener(u.Path),
        VsockEndpoint v => new VsockAgentListener(v.Port),
        _ => throw new ArgumentException("unknown endpoint " + endpoint),
    };
}

/// <summary>A Unix stream socket at a path (which must not exist yet).</summary>
internal sealed class UnixAgentListener : IAgentListener
{
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
    private readonly string _path;

    public UnixAgentListener(string path)
    {
        _path = path;
        try
        {
            _socket.Bind(new UnixDomainSocketEndPoint(path));
            _socket.Listen(64);
        }
        catch (SocketException e)
        {
            _socket.Dispose();
            throw new IOException($"listen on unix:{path}: {e.Message}", e);
        }
    }

    public string Description => "unix:" + _path;

    public async Task<Socket> AcceptAsync(CancellationToken cancellationToken) =>
        await _socket.AcceptAsync(cancellationToken).ConfigureAwait(false);

    public void Dispose()
    {
        _socket.Dispose();
        try { File.Delete(_path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// An AF_VSOCK listener on a port for any CID. The runtime's Socket cannot accept on a family it
/// does not know, so one thread blocks in accept4 and hands connections over.
/// </summary>
internal sealed class VsockAgentListener : IAgentListener
{
    private readonly int _fd;
    private readonly uint _port;
    private readonly Channel<Socket> _accepted = Channel.CreateBounded<Socket>(8);
    private volatile bool _disposed;

    public VsockAgentListener(uint port)
    {
        _port = port;
        _fd = Vsock.Listen(port, backlog: 64);
        new Thread(AcceptLoop) { IsBackground = true, Name = "vsock-accept" }.Start();
    }

    public string Description => $"vsock:{_port}";

    private void AcceptLoop()
    {
        while (!_disposed)
        {
            int fd = Vsock.Accept(_fd, out int errno);
            if (fd < 0)
            {
                if (_disposed) break;
                if (errno == LibC.EINTR || errno == LibC.ECONNABORTED) continue;
                Log.Error($"vsock accept: {Interop.Native.ErrnoText(errno)}");
                Thread.Sleep(100);
                continue;
            }
            var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            // Blocks while 8 connections wait to be served: the backlog then holds the rest.
            _accepted.Writer.WriteAsync(socket).AsTask().GetAwaiter().GetResult();
        }
        _accepted.Writer.TryComplete();
    }

    public async Task<Socket> AcceptAsync(CancellationToken cancellationToken) =>
        await _accepted.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Vsock.Shutdown(_fd); // wakes the blocked accept4
        _ = LibC.close(_fd); // the listener is going; nothing to do if close reports an error
    }
}
