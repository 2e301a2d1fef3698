namespace FireSharp.Memory;

/// <summary>A guest physical access that is not wholly inside guest RAM. Never becomes a host access.</summary>
public sealed class GuestMemoryException(ulong gpa, ulong length, string? detail = null)
    : Exception($"guest memory access out of range: gpa=0x{gpa:x} length={length}{(detail is null ? "" : ": " + detail)}")
{
    public ulong Gpa { get; } = gpa;
    public ulong Length { get; } = length;
}

/// <summary>The host refused to map guest memory (mmap failed with <see cref="Errno"/>; ENOMEM: not that much address space).</summary>
public sealed class GuestMemoryMapException(int errno, string detail)
    : Exception($"mmap of {detail} failed: {Kvm.Interop.Errno.Text(errno)}")
{
    public int Errno { get; } = errno;
}
