using System.Runtime.InteropServices;
using Tmds.Linux;

namespace FireSharp.Agent.Functions;

/// <summary>
/// Brings the loopback interface up with SIOCGIFFLAGS/SIOCSIFFLAGS (no helper process: on the PVM
/// host a freshly started busybox occasionally dies of SIGSEGV, see docs/pvm.md).
/// </summary>
internal static unsafe class Loopback
{
    private const int SIOCGIFFLAGS = 0x8913;
    private const int SIOCSIFFLAGS = 0x8914;
    private const short IFF_UP = 0x1;
    private const int IfReqBytes = 40; // struct ifreq: char ifr_name[16] + a 24-byte union

    /// <summary>True if lo is up now (it was, or it was brought up); false with <paramref name="error"/> otherwise.</summary>
    public static bool EnsureUp(out string? error)
    {
        error = null;
        int fd = LibC.socket(LibC.AF_INET, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            error = "socket: " + Interop.Native.ErrnoText(LibC.errno);
            return false;
        }
        try
        {
            byte* ifr = stackalloc byte[IfReqBytes];
            new Span<byte>(ifr, IfReqBytes).Clear();
            "lo"u8.CopyTo(new Span<byte>(ifr, 16));
            if (LibC.ioctl(fd, SIOCGIFFLAGS, ifr) != 0)
            {
                error = "SIOCGIFFLAGS lo: " + Interop.Native.ErrnoText(LibC.errno);
                return false;
            }
            short* flags = (short*)(ifr + 16);
            if ((*flags & IFF_UP) != 0) return true;
            *flags |= IFF_UP;
            if (LibC.ioctl(fd, SIOCSIFFLAGS, ifr) != 0)
            {
                error = "SIOCSIFFLAGS lo: " + Interop.Native.ErrnoText(LibC.errno);
                return false;
            }
            Log.Info("brought the loopback interface up for the Runtime API");
            return true;
        }
        finally
        {
            _ = LibC.close(fd); // an ioctl-only socket: close has nothing to report
        }
    }
}
