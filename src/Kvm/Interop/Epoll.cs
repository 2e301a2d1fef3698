using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>epoll(7), declared without unsafe code (struct by span), for the virtio event loop.</summary>
public static partial class Epoll
{
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLL_CTL_MOD = 3;
    public const uint EPOLLIN = 0x001, EPOLLOUT = 0x004, EPOLLERR = 0x008, EPOLLHUP = 0x010, EPOLLRDHUP = 0x2000;
    public const int EINTR = 4, ENOENT = 2;

    /// <summary>struct epoll_event is packed on x86-64: 4 bytes of events, then 8 bytes of data (12 in all).</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    /// <summary>epoll_create1; an invalid handle and <see cref="Errno.Last"/> on failure.</summary>
    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial EpollHandle Create(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int Ctl(EpollHandle epfd, int op, int fd, ref EpollEvent ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int Wait(EpollHandle epfd, Span<EpollEvent> events, int maxEvents, int timeoutMs);
}

/// <summary>An epoll instance: closed once, and never while an epoll_ctl or epoll_wait on it is in flight.</summary>
public sealed class EpollHandle : SafeHandleMinusOneIsInvalid
{
    public EpollHandle() : base(ownsHandle: true) { }

    protected override bool ReleaseHandle() => Descriptors.Close((int)handle) == 0;
}
