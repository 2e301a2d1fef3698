using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// The plain file-descriptor calls: open(2), close(2), lseek(2), fsync(2) and fstat(2). x86_64 Linux numbers.
/// Every one returns -1 and leaves <see cref="Errno.Last"/> on failure.
/// </summary>
public static partial class Descriptors
{
    public const int ORdOnly = 0, ORdWr = 2, ODirectory = 0x10000, OCloexec = 0x80000;

    /// <summary>lseek whences beyond SEEK_SET/CUR/END: the next data, the next hole (Linux &lt;unistd.h&gt;).</summary>
    public const int SeekData = 3, SeekHole = 4;

    /// <summary>struct stat on x86_64 (144 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Stat
    {
        public ulong Dev;
        public ulong Ino;
        public ulong NLink;
        public uint Mode;
        public uint Uid;
        public uint Gid;
        public uint Pad0;
        public ulong RDev;
        public long Size;
        public long BlkSize;
        public long Blocks;
        public long ATime, ATimeNs, MTime, MTimeNs, CTime, CTimeNs;
        public long Reserved0, Reserved1, Reserved2;
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    public static partial long Seek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Sync(int fd);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    public static partial int FStat(int fd, out Stat buffer);
}
