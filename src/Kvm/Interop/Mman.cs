using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>mmap(2) and munmap(2): guest RAM and the vCPUs' kvm_run pages. x86_64 Linux numbers.</summary>
public static partial class Mman
{
    public const int ProtRead = 0x1, ProtWrite = 0x2;
    public const int MapShared = 0x01, MapPrivate = 0x02, MapAnonymous = 0x20, MapNoReserve = 0x4000;

    /// <summary>What mmap returns on failure (MAP_FAILED).</summary>
    public const nint MapFailed = -1;

    /// <summary>mmap; <see cref="MapFailed"/> and <see cref="Errno.Last"/> on failure.</summary>
    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Map(nint address, nuint length, int protection, int flags, int fd, long offset);

    /// <summary>munmap; -1 and <see cref="Errno.Last"/> on failure.</summary>
    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int Unmap(nint address, nuint length);
}
