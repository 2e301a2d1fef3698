using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Terminal modes for <c>firesharp vm console</c> (termios through libc's tcgetattr, cfmakeraw and tcsetattr). The
/// struct termios is kept as opaque bytes that only libc reads and writes, so its layout is never spelled out here:
/// cfmakeraw sets the raw mode (no echo, no line editing, no signals from Ctrl-C or Ctrl-Z, no output processing,
/// one byte at a time) and the saved bytes are written back to restore the terminal.
/// </summary>
public static partial class Terminal
{
    /// <summary>Larger than glibc's struct termios (60 bytes on x86_64), so libc never writes past it.</summary>
    private const int TermiosBytes = 128;
    private const int TCSANOW = 0, TCSAFLUSH = 2;

    [LibraryImport("libc", EntryPoint = "isatty")]
    private static partial int IsAtty(int fd);

    [LibraryImport("libc", EntryPoint = "tcgetattr", SetLastError = true)]
    private static partial int TcGetAttr(int fd, Span<byte> termios);

    [LibraryImport("libc", EntryPoint = "tcsetattr", SetLastError = true)]
    private static partial int TcSetAttr(int fd, int optionalActions, ReadOnlySpan<byte> termios);

    [LibraryImport("libc", EntryPoint = "cfmakeraw")]
    private static partial void CfMakeRaw(Span<byte> termios);

    /// <summary>Whether <paramref name="fd"/> is a terminal.</summary>
    public static bool IsTerminal(int fd) => IsAtty(fd) == 1;

    /// <summary>
    /// Puts the terminal on <paramref name="fd"/> into raw mode; disposing the result (once, from any thread, also
    /// from a signal handler's callback) restores the mode it had. Throws <see cref="IOException"/> when
    /// <paramref name="fd"/> is not a terminal.
    /// </summary>
    public static RawMode EnterRawMode(int fd)
    {
        var saved = new byte[TermiosBytes];
        if (TcGetAttr(fd, saved) != 0) throw new IOException($"tcgetattr({fd}): {Errno.LastText()}");
        var raw = (byte[])saved.Clone();
        CfMakeRaw(raw);
        if (TcSetAttr(fd, TCSAFLUSH, raw) != 0) throw new IOException($"tcsetattr({fd}): {Errno.LastText()}");
        return new RawMode(fd, saved);
    }

    /// <summary>A terminal in raw mode; <see cref="Dispose"/> restores it (idempotent).</summary>
    public sealed class RawMode : IDisposable
    {
        private readonly int _fd;
        private readonly byte[] _saved;
        private int _restored;

        internal RawMode(int fd, byte[] saved) => (_fd, _saved) = (fd, saved);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _restored, 1) == 0) _ = TcSetAttr(_fd, TCSANOW, _saved);
        }
    }
}
