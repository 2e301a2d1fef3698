using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using FireSharp.Agent.Interop;
using FireSharp.Proto.Agent;

namespace FireSharp.Agent.Server;

/// <summary>
/// Reseed (after a snapshot restore): the host's entropy into the kernel's input pool with RNDADDENTROPY
/// (credited), then RNDRESEEDCRNG so that the CRNG is rekeyed from it at once rather than at its next
/// scheduled reseed; optionally a new hostname. Both ioctls need CAP_SYS_ADMIN (the agent runs as root).
/// </summary>
internal static partial class ReseedHandler
{
    public const int MinEntropyBytes = 16, MaxEntropyBytes = 512;

    // <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]), RNDRESEEDCRNG = _IO('R', 0x07).
    private const uint RNDADDENTROPY = 0x40085203, RNDRESEEDCRNG = 0x5207;
    private const int O_WRONLY = 1, O_CLOEXEC = 0x80000;

    public static string RandomDevice { get; set; } = "/dev/urandom";

    public static Response Handle(ulong id, ReseedRequest request)
    {
        int n = request.Entropy.Length;
        if (n is < MinEntropyBytes or > MaxEntropyBytes)
            return Error(id, ErrorCode.InvalidArgument, $"entropy is {n} bytes; send {MinEntropyBytes} to {MaxEntropyBytes}");
        if (request.Hostname.Length > 64 || request.Hostname.Any(c => c <= ' ' || c >= 0x7f))
            return Error(id, ErrorCode.InvalidArgument, "hostname must be at most 64 printable ASCII characters without spaces");

        // struct rand_pool_info { int entropy_count (bits); int buf_size (bytes); __u32 buf[]; }
        var info = new byte[8 + ((n + 3) & ~3)];
        BinaryPrimitives.WriteInt32LittleEndian(info, n * 8);
        BinaryPrimitives.WriteInt32LittleEndian(info.AsSpan(4), n);
        request.Entropy.Span.CopyTo(info.AsSpan(8));
        int fd = open(RandomDevice, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return Errno(id, $"open {RandomDevice}");
        bool reseeded;
        try
        {
            if (ioctl(fd, RNDADDENTROPY, info) < 0) return Errno(id, "RNDADDENTROPY");
            reseeded = ioctl(fd, RNDRESEEDCRNG, IntPtr.Zero) == 0;
        }
        finally
        {
            Array.Clear(info);
            close(fd);
        }
        if (request.Hostname.Length > 0)
        {
            var name = Encoding.ASCII.GetBytes(request.Hostname);
            if (sethostname(name, (nuint)name.Length) < 0) return Errno(id, "sethostname");
        }
        Log.Debug($"reseed: {n} bytes of host entropy added, CRNG {(reseeded ? "reseeded" : "not reseeded (RNDRESEEDCRNG failed)")}"
            + (request.Hostname.Length > 0 ? $", hostname {request.Hostname}" : ""));
        return new Response { Id = id, Reseed = new ReseedReply { Reseeded = reseeded } };
    }

    private static Response Errno(ulong id, string what)
    {
        int errno = Marshal.GetLastPInvokeError();
        var code = errno switch
        {
            1 or 13 => ErrorCode.PermissionDenied, // EPERM, EACCES
            2 => ErrorCode.NotFound,
            _ => ErrorCode.IoError,
        };
        return Error(id, code, $"{what}: {Native.ErrnoText(errno)}");
    }

    private static Response Error(ulong id, ErrorCode code, string message) =>
        new() { Id = id, Error = new Error { Code = code, Message = message } };

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, byte[] arg);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int ioctl(int fd, nuint request, IntPtr arg);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int sethostname(byte[] name, nuint length);
}
