using Microsoft.Win32.SafeHandles;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>What became of a frame handed to <see cref="INetBackend.Write"/>.</summary>
public enum NetWriteResult
{
    Sent,

    /// <summary>The backend's queue is full; the frame is dropped (a network may drop).</summary>
    WouldBlock,

    /// <summary>The backend refused the frame (e.g. a virtio-net header the kernel finds inconsistent); dropped.</summary>
    Rejected,
}

/// <summary>
/// The host side of a virtio-net device: frames, each preceded by a 12-byte virtio-net header
/// (<see cref="NetProtocol.HeaderSize"/>), in and out of a non-blocking descriptor that the device's event loop
/// watches with epoll. <see cref="TapBackend"/> is the real one; <see cref="SocketPairBackend"/> serves tests.
/// </summary>
public interface INetBackend : IDisposable
{
    /// <summary>For logs: the tap's name, or what the backend is.</summary>
    string Name { get; }

    /// <summary>A non-blocking descriptor that polls readable when <see cref="Read"/> has a frame.</summary>
    int Fd { get; }

    /// <summary>Offloads this backend can take in frames written to it and produce in frames read from it.</summary>
    NetOffloads SupportedOffloads { get; }

    /// <summary>
    /// Which offloads frames read from the backend may use (what the guest driver negotiated it can receive):
    /// without <see cref="NetOffloads.Csum"/> every frame arrives fully checksummed, without TSO none is larger
    /// than the MTU. Only a subset of <see cref="SupportedOffloads"/>.
    /// </summary>
    void SetReceiveOffloads(NetOffloads offloads);

    /// <summary>Reads one frame (header and packet) into <paramref name="buffer"/>; 0 when none is waiting.</summary>
    /// <exception cref="IOException">The backend failed (e.g. the tap was deleted).</exception>
    int Read(Span<byte> buffer);

    /// <summary>Writes one frame (header and packet); never blocks.</summary>
    NetWriteResult Write(ReadOnlySpan<byte> frame);
}

/// <summary>The common part of descriptor-backed backends: non-blocking read and write of whole frames.</summary>
public abstract class FdNetBackend : INetBackend
{
    private readonly SafeFileHandle _handle;

    protected FdNetBackend(int fd) => _handle = new SafeFileHandle(fd, ownsHandle: true);

    public abstract string Name { get; }
    public int Fd => (int)_handle.DangerousGetHandle();
    public abstract NetOffloads SupportedOffloads { get; }
    public abstract void SetReceiveOffloads(NetOffloads offloads);

    public int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        while (true)
        {
            nint n = NetInterop.Read(Fd, buffer, buffer.Length);
            if (n >= 0) return (int)n;
            int err = Errno.Last;
            if (err == NetInterop.EINTR) continue;
            if (err == NetInterop.EAGAIN) return 0;
            throw Errno.IOError($"{Name}: read", err);
        }
    }

    public NetWriteResult Write(ReadOnlySpan<byte> frame)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        while (true)
        {
            nint n = NetInterop.Write(Fd, frame, frame.Length);
            if (n >= 0) return NetWriteResult.Sent;
            int err = Errno.Last;
            if (err == NetInterop.EINTR) continue;
            // ENOBUFS: a socket's send buffer is full; EAGAIN: the same without blocking.
            return err is NetInterop.EAGAIN or NetInterop.ENOBUFS ? NetWriteResult.WouldBlock : NetWriteResult.Rejected;
        }
    }

    protected virtual void Dispose(bool disposing)
    {
        if (disposing) _handle.Dispose();
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }
}
