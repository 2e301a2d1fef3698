using System.Net.Sockets;
using System.Runtime.InteropServices;
using FireSharp.Agent.Interop;
using Tmds.Linux;

namespace FireSharp.Agent.Transport;

/// <summary>AF_VSOCK sockets, which the runtime's Socket cannot create or bind itself.</summary>
internal static unsafe class Vsock
{
    public const uint VMADDR_CID_ANY = 0xFFFFFFFF;

    /// <summary>struct sockaddr_vm (linux/vm_sockets.h), 16 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct sockaddr_vm
    {
        public ushort svm_family;
        public ushort svm_reserved1;
        public uint svm_port;
        public uint svm_cid;
        public fixed byte svm_zero[4]; // svm_flags + padding to sizeof(struct sockaddr)
    }

    /// <summary>A blocking listening socket on <paramref name="port"/> for any CID.</summary>
    public static int Listen(uint port, int backlog)
    {
        int fd = LibC.socket((int)(ushort)LibC.AF_VSOCK, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new IOException("socket(AF_VSOCK): " + Native.ErrnoText(LibC.errno));
        var addr = new sockaddr_vm { svm_family = (ushort)LibC.AF_VSOCK, svm_port = port, svm_cid = VMADDR_CID_ANY };
        if (LibC.bind(fd, (sockaddr*)&addr, (socklen_t)(uint)sizeof(sockaddr_vm)) != 0 || LibC.listen(fd, backlog) != 0)
        {
            int err = LibC.errno;
            _ = LibC.close(fd); // failing already: the bind/listen error is the one to report
            throw new IOException($"bind/listen vsock port {port}: {Native.ErrnoText(err)}");
        }
        return fd;
    }

    /// <summary>Blocking accept; returns the connection, or -1 with the errno.</summary>
    public static int Accept(int listenFd, out int errno)
    {
        int fd = LibC.accept4(listenFd, null, null, LibC.SOCK_CLOEXEC);
        errno = fd < 0 ? LibC.errno : 0;
        return fd;
    }

    /// <summary>Connects to (cid, port); blocks up to the kernel's vsock connect timeout (2 s).</summary>
    public static Socket Connect(uint cid, uint port)
    {
        int fd = LibC.socket((int)(ushort)LibC.AF_VSOCK, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0) throw new IOException("socket(AF_VSOCK): " + Native.ErrnoText(LibC.errno));
        var addr = new sockaddr_vm { svm_family = (ushort)LibC.AF_VSOCK, svm_port = port, svm_cid = cid };
        int rc;
        do rc = LibC.connect(fd, (sockaddr*)&addr, (socklen_t)(uint)sizeof(sockaddr_vm));
        while (rc != 0 && LibC.errno == LibC.EINTR);
        if (rc != 0)
        {
            int err = LibC.errno;
            _ = LibC.close(fd); // failing already: the connect error is the one to report
            throw new IOException($"connect vsock {cid}:{port}: {Native.ErrnoText(err)}");
        }
        return new Socket(new SafeSocketHandle(fd, ownsHandle: true));
    }

    /// <summary>shutdown(SHUT_RDWR), to wake a thread blocked on the fd; an fd that is not connected has nothing to wake.</summary>
    public static void Shutdown(int fd) => _ = LibC.shutdown(fd, LibC.SHUT_RDWR);
}
