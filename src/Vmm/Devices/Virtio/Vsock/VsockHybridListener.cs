using System.Net.Sockets;
using System.Text;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// The Unix sockets of Firecracker's hybrid vsock: the VM's listening socket at <see cref="UdsPath"/> (host clients
/// connect and write <c>CONNECT &lt;port&gt;\n</c>, see <see cref="VsockConnectLine"/>; they are answered
/// <see cref="OkLine"/>), and the sockets a guest connection to host port P opens at <c>UdsPath_P</c>
/// (<see cref="ConnectForGuest"/>). Non-blocking throughout. Disposing it removes the socket file.
/// </summary>
internal sealed class VsockHybridListener : IDisposable
{
    private readonly Socket _listener;

    /// <summary>Binds and listens at <paramref name="udsPath"/>; <see cref="VirtioConfigException"/> if it cannot be bound.</summary>
    public VsockHybridListener(string udsPath)
    {
        UdsPath = udsPath;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _listener.Bind(new UnixDomainSocketEndPoint(udsPath));
        }
        catch (SocketException e)
        {
            _listener.Dispose(); // the path was not ours: it stays
            throw new VirtioConfigException("vsock", VirtioConfigError.InvalidVsockPath, $"cannot create vsock Unix socket {udsPath}: {e.Message}");
        }
        try
        {
            _listener.Listen(128);
            _listener.Blocking = false;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string UdsPath { get; }

    /// <summary>The listening socket's descriptor (for epoll).</summary>
    public int Fd => (int)_listener.Handle;

    /// <summary>The next host client, non-blocking; null if none is waiting (another event took it, or it left).</summary>
    public Socket? Accept()
    {
        Socket s;
        try
        {
            s = _listener.Accept();
        }
        catch (SocketException)
        {
            return null;
        }
        s.Blocking = false;
        return s;
    }

    /// <summary>The answer to a host client once the guest accepted: <c>OK &lt;hostport&gt;\n</c>.</summary>
    public static byte[] OkLine(uint hostPort) => Encoding.ASCII.GetBytes($"OK {hostPort}\n");

    /// <summary>
    /// Connects (non-blocking) to <c>udsPath_port</c> for a guest connection to host port <paramref name="port"/>.
    /// Null, with the reason in <paramref name="error"/> (null when the path is too long), if nothing takes it.
    /// </summary>
    public Socket? ConnectForGuest(uint port, out string path, out string? error)
    {
        path = VsockDeviceSpec.GuestInitiatedPath(UdsPath, port);
        error = null;
        if (Encoding.UTF8.GetByteCount(path) > VsockDeviceSpec.MaxUnixPathBytes) return null;
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            // Non-blocking: a listener with a full backlog refuses (EAGAIN) instead of stalling the loop.
            s.Blocking = false;
            s.Connect(new UnixDomainSocketEndPoint(path));
            return s;
        }
        catch (SocketException e)
        {
            s.Dispose();
            error = e.SocketErrorCode.ToString();
            return null;
        }
    }

    public void Dispose()
    {
        _listener.Dispose();
        try { File.Delete(UdsPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
