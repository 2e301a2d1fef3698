using System.Net.Sockets;

using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// A backend over one end of an AF_UNIX SOCK_SEQPACKET socket pair (each message one frame with its header);
/// the other end is a <see cref="Socket"/> for whoever plays the network: tests, or a second VM. It claims
/// whatever offloads it is told, since nothing on the other side checks them.
/// </summary>
public sealed class SocketPairBackend : FdNetBackend
{
    private SocketPairBackend(int fd, NetOffloads supported) : base(fd) => SupportedOffloads = supported;

    public override string Name => "socketpair";
    public override NetOffloads SupportedOffloads { get; }

    /// <summary>What the device last asked for (<see cref="SetReceiveOffloads"/>).</summary>
    public NetOffloads ReceiveOffloads { get; private set; }

    public override void SetReceiveOffloads(NetOffloads offloads) => ReceiveOffloads = offloads;

    /// <summary>A backend and the peer socket that sees its frames.</summary>
    public static (SocketPairBackend Backend, Socket Peer) Create(NetOffloads supported = NetOffloads.None)
    {
        Span<int> fds = stackalloc int[2];
        if (NetInterop.SocketPair(NetInterop.AF_UNIX, NetInterop.SOCK_SEQPACKET | NetInterop.SOCK_NONBLOCK | NetInterop.SOCK_CLOEXEC, 0, fds) < 0)
            throw Errno.LastIOError("socketpair");
        var backend = new SocketPairBackend(fds[0], supported);
        var peer = new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)) { Blocking = true };
        // Room for a few maximum-size frames each way.
        peer.SendBufferSize = peer.ReceiveBufferSize = 1 << 20;
        return (backend, peer);
    }
}
