using System.Net.Sockets;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// One non-blocking host Unix socket of the vsock muxer: the <see cref="IVsockHostStream"/> of a connection, and
/// its registration in the device's epoll set under <see cref="Tag"/> (level-triggered). Event-loop thread only.
/// </summary>
internal sealed class VsockHostSocket(Socket socket, ulong tag, VirtioEventLoop poller) : IVsockHostStream
{
    private uint? _interest;

    public Socket Socket { get; } = socket;

    /// <summary>The epoll tag its events carry.</summary>
    public ulong Tag { get; } = tag;

    /// <summary>
    /// Makes epoll watch the socket for <paramref name="events"/>. A hung-up socket reports EPOLLHUP whatever it is
    /// asked for: with <paramref name="hungUp"/> and no EPOLLIN wanted it is taken out of epoll (parked) instead.
    /// </summary>
    public void Watch(uint events, bool hungUp)
    {
        if (hungUp && (events & Epoll.EPOLLIN) == 0)
        {
            Unwatch();
            return;
        }
        if (_interest == events) return;
        poller.Control(_interest is null ? Epoll.EPOLL_CTL_ADD : Epoll.EPOLL_CTL_MOD, (int)Socket.Handle, events, Tag);
        _interest = events;
    }

    /// <summary>Takes it out of epoll and closes it.</summary>
    public void Close()
    {
        Unwatch();
        Socket.Dispose();
    }

    private void Unwatch()
    {
        if (_interest is null) return;
        poller.Remove((int)Socket.Handle);
        _interest = null;
    }

    public VsockIo Write(ReadOnlySpan<byte> data, out int written)
    {
        written = Socket.Send(data, SocketFlags.None, out var err);
        return Result(err);
    }

    public VsockIo Read(Span<byte> buffer, out int read)
    {
        read = Socket.Receive(buffer, SocketFlags.None, out var err);
        return Result(err);
    }

    public void ShutdownWrite() => Shutdown(SocketShutdown.Send);

    public void ShutdownRead() => Shutdown(SocketShutdown.Receive);

    private void Shutdown(SocketShutdown how)
    {
        try { Socket.Shutdown(how); }
        catch (SocketException) { }
    }

    private static VsockIo Result(SocketError err) => err switch
    {
        SocketError.Success => VsockIo.Done,
        SocketError.WouldBlock => VsockIo.WouldBlock,
        _ => VsockIo.Failed,
    };
}
