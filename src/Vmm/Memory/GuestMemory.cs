using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static Tmds.Linux.LibC;

namespace FireSharp.Memory;

/// <summary>One contiguous range of guest RAM and the host mapping behind it.</summary>
public sealed class GuestRegion
{
    internal GuestRegion(int slot, ulong guestAddress, ulong size, nint hostAddress)
    {
        Slot = slot;
        GuestAddress = guestAddress;
        Size = size;
        HostAddress = hostAddress;
    }

    /// <summary>KVM memory slot number this region is registered under.</summary>
    public int Slot { get; }
    public ulong GuestAddress { get; }
    public ulong Size { get; }
    public ulong End => GuestAddress + Size;

    /// <summary>Host virtual address of the mapping. Only the KVM layer and this assembly's tests use it.</summary>
    internal nint HostAddress { get; }
}

/// <summary>
/// Guest RAM: host mappings (anonymous, <c>MAP_NORESERVE</c>) split around the 3–4 GiB MMIO gap,
/// with bounds-checked access by guest physical address. Every accessor checks the whole range
/// against one region before touching host memory; a range outside RAM or straddling two regions
/// is refused, so a guest-supplied address can never become a host read or write elsewhere.
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{
    private readonly GuestRegion[] _regions;
    private int _disposed;

    private GuestMemory(GuestRegion[] regions)
    {
        _regions = regions;
        foreach (var r in regions) TotalSize += r.Size;
    }

    /// <summary>Sum of all region sizes (the guest's RAM size).</summary>
    public ulong TotalSize { get; }

    public IReadOnlyList<GuestRegion> Regions => _regions;

    /// <summary>Maps <paramref name="totalBytes"/> of zeroed anonymous memory, split around the MMIO gap.</summary>
    public static GuestMemory CreateAnonymous(ulong totalBytes)
    {
        if (totalBytes == 0 || totalBytes % MemoryLayout.PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(totalBytes), totalBytes, "guest memory size must be a non-zero multiple of 4 KiB");
        var ranges = MemoryLayout.RamRanges(totalBytes);
        var regions = new List<GuestRegion>(ranges.Count);
        try
        {
            foreach (var (gpa, size) in ranges)
            {
                void* p = mmap(null, (Tmds.Linux.size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (p == (void*)-1)
                    throw new OutOfMemoryException($"mmap of {size} bytes of guest memory failed: {Kvm.KvmException.ErrnoText(errno)}");
                regions.Add(new GuestRegion(regions.Count, gpa, size, (nint)p));
            }
        }
        catch
        {
            foreach (var r in regions) munmap((void*)r.HostAddress, (Tmds.Linux.size_t)r.Size);
            throw;
        }
        return new GuestMemory([.. regions]);
    }

    /// <summary>True when [gpa, gpa+length) lies wholly inside one RAM region.</summary>
    public bool Contains(ulong gpa, ulong length) => FindRegion(gpa, length) is not null;

    /// <summary>Returns the host view of [gpa, gpa+length), or false when any byte of it is outside RAM.</summary>
    public bool TryGetSpan(ulong gpa, int length, out Span<byte> span)
    {
        if (length < 0 || FindRegion(gpa, (ulong)length) is not { } r)
        {
            span = default;
            return false;
        }
        span = new Span<byte>((void*)(r.HostAddress + (nint)(gpa - r.GuestAddress)), length);
        return true;
    }

    /// <summary>Returns the host view of [gpa, gpa+length) or throws <see cref="GuestMemoryException"/>.</summary>
    public Span<byte> GetSpan(ulong gpa, int length)
    {
        if (!TryGetSpan(gpa, length, out var span))
            throw new GuestMemoryException(gpa, (ulong)Math.Max(0, length));
        return span;
    }

    public void Read(ulong gpa, Span<byte> destination) => GetSpan(gpa, destination.Length).CopyTo(destination);

    public void Write(ulong gpa, ReadOnlySpan<byte> source) => source.CopyTo(GetSpan(gpa, source.Length));

    /// <summary>Reads an unmanaged little-endian value at <paramref name="gpa"/> (no alignment required).</summary>
    public T Read<T>(ulong gpa) where T : unmanaged =>
        Unsafe.ReadUnaligned<T>(ref MemoryMarshal.GetReference(GetSpan(gpa, sizeof(T))));

    public void Write<T>(ulong gpa, T value) where T : unmanaged =>
        Unsafe.WriteUnaligned(ref MemoryMarshal.GetReference(GetSpan(gpa, sizeof(T))), value);

    /// <summary>Zeroes [gpa, gpa+length).</summary>
    public void Clear(ulong gpa, int length) => GetSpan(gpa, length).Clear();

    private GuestRegion? FindRegion(ulong gpa, ulong length)
    {
        foreach (var r in _regions)
        {
            // Written to be overflow-free: gpa+length may wrap for hostile inputs.
            if (gpa >= r.GuestAddress && gpa - r.GuestAddress <= r.Size && length <= r.Size - (gpa - r.GuestAddress))
                return r;
        }
        return null;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var r in _regions) munmap((void*)r.HostAddress, (Tmds.Linux.size_t)r.Size);
    }
}
