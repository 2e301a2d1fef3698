using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

using FireSharp.Kvm.Interop;

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

    /// <summary>Offset of this region in the memory file it is privately mapped from, or null when anonymous.</summary>
    public ulong? FileOffset { get; internal init; }
}

/// <summary>
/// Guest RAM: host mappings split around the 3–4 GiB MMIO gap, with bounds-checked access by guest
/// physical address. The mappings are anonymous (<c>MAP_NORESERVE</c>) for a fresh VM, or a private
/// mapping of a snapshot's memory file for a restored one (pages load on first touch, writes are
/// copy-on-write and never reach the file). Every accessor checks the whole range against one region
/// before touching host memory; a range outside RAM or straddling two regions is refused, so a
/// guest-supplied address can never become a host read or write elsewhere. After <see cref="Dispose"/>
/// every accessor throws <see cref="ObjectDisposedException"/> instead of touching the unmapped range;
/// whoever owns the memory disposes it only once no thread can still be using a span of it.
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{

    private readonly GuestRegion[] _regions;
    private readonly SafeFileHandle? _backingFile;
    private int _disposed;

    /// <summary>Per region (index = <see cref="GuestRegion.Slot"/>), one bit per 4 KiB page written through an accessor; null when tracking is off.</summary>
    private ulong[][]? _dirty;

    private GuestMemory(GuestRegion[] regions, SafeFileHandle? backingFile = null, string? backingPath = null)
    {
        _regions = regions;
        _backingFile = backingFile;
        BackingFilePath = backingPath;
        foreach (var r in regions) TotalSize += r.Size;
    }

    /// <summary>Sum of all region sizes (the guest's RAM size).</summary>
    public ulong TotalSize { get; }

    /// <summary>The snapshot memory file behind a restored VM's RAM (mapped private), or null for anonymous RAM.</summary>
    public string? BackingFilePath { get; }

    public IReadOnlyList<GuestRegion> Regions => _regions;

    /// <summary>True once <see cref="Dispose"/> has unmapped the memory.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Maps <paramref name="totalBytes"/> of zeroed anonymous memory, split around the MMIO gap.</summary>
    /// <exception cref="GuestMemoryMapException">mmap failed (ENOMEM: the host will not give that much address space).</exception>
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
                nint p = Mman.Map(0, (nuint)size, Mman.ProtRead | Mman.ProtWrite, Mman.MapPrivate | Mman.MapAnonymous | Mman.MapNoReserve, -1, 0);
                if (p == Mman.MapFailed)
                    throw new GuestMemoryMapException(Errno.Last, $"{size} bytes of guest memory");
                regions.Add(new GuestRegion(regions.Count, gpa, size, p));
            }
        }
        catch
        {
            foreach (var r in regions) Unmap(r);
            throw;
        }
        return new GuestMemory([.. regions]);
    }

    /// <summary>
    /// Maps a guest memory file (a snapshot's, laid out as the regions in order, RAM below the gap
    /// first) <c>MAP_PRIVATE</c>: nothing is read or copied now; each page loads from the file (page
    /// cache, shared by every VM mapping the same file) on first touch, and a write makes a private
    /// copy. The file must not change while mapped; its size must be exactly <paramref name="totalBytes"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The file's size is not <paramref name="totalBytes"/>.</exception>
    /// <exception cref="GuestMemoryMapException">mmap failed.</exception>
    public static GuestMemory CreateFromFile(string path, ulong totalBytes) =>
        CreateFromFile(File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read), path, totalBytes);

    /// <summary>As <see cref="CreateFromFile(string, ulong)"/>, over a file already open (the memory then owns <paramref name="file"/>; disposed on failure).</summary>
    public static GuestMemory CreateFromFile(SafeFileHandle file, string path, ulong totalBytes)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (totalBytes == 0 || totalBytes % MemoryLayout.PageSize != 0)
        {
            file.Dispose();
            throw new ArgumentOutOfRangeException(nameof(totalBytes), totalBytes, "guest memory size must be a non-zero multiple of 4 KiB");
        }
        var regions = new List<GuestRegion>(2);
        try
        {
            long length = RandomAccess.GetLength(file);
            if ((ulong)length != totalBytes)
                throw new InvalidDataException($"guest memory file {path} is {length} bytes, expected {totalBytes}");
            ulong offset = 0;
            foreach (var (gpa, size) in MemoryLayout.RamRanges(totalBytes))
            {
                nint p = Mman.Map(0, (nuint)size, Mman.ProtRead | Mman.ProtWrite, Mman.MapPrivate | Mman.MapNoReserve,
                    (int)file.DangerousGetHandle(), (long)offset);
                if (p == Mman.MapFailed)
                    throw new GuestMemoryMapException(Errno.Last, $"{size} bytes of {path}");
                regions.Add(new GuestRegion(regions.Count, gpa, size, p) { FileOffset = offset });
                offset += size;
            }
        }
        catch
        {
            foreach (var r in regions) Unmap(r);
            file.Dispose();
            throw;
        }
        return new GuestMemory([.. regions], file, path);
    }

    /// <summary>
    /// For snapshots: the runs of <paramref name="region"/>, as (guest address, length), that may hold
    /// non-zero bytes. Every other page is certainly zero and is not touched: an anonymous page the
    /// guest never faulted in, or a file-backed page that was never faulted in and lies in a hole of
    /// the memory file. /proc/self/pagemap says which pages are present (or swapped); when it cannot
    /// be read the whole region is returned.
    /// </summary>
    public IEnumerable<(ulong Gpa, ulong Length)> PossiblyNonZeroRuns(GuestRegion region)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        const ulong Page = MemoryLayout.PageSize;
        const int Batch = 4096; // pagemap entries per read (16 MiB of guest memory)
        SafeFileHandle? pagemap = null;
        try { pagemap = File.OpenHandle("/proc/self/pagemap", FileMode.Open, FileAccess.Read); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        if (pagemap is null)
        {
            yield return (region.GuestAddress, region.Size);
            yield break;
        }
        using (pagemap)
        {
            var data = region.FileOffset is { } fileOffset ? FileDataExtents(fileOffset, region.Size) : [];
            int extent = 0;
            ulong pages = region.Size / Page;
            var entries = new byte[Batch * 8];
            ulong runStart = 0, runLength = 0;
            for (ulong first = 0; first < pages; first += Batch)
            {
                int count = (int)Math.Min((ulong)Batch, pages - first);
                long at = (long)(((ulong)region.HostAddress / Page + first) * 8);
                int want = count * 8, got = 0;
                while (got < want)
                {
                    int n = RandomAccess.Read(pagemap, entries.AsSpan(got, want - got), at + got);
                    if (n <= 0) break;
                    got += n;
                }
                for (int i = 0; i < count; i++)
                {
                    ulong page = first + (ulong)i;
                    bool candidate;
                    if (got < (i + 1) * 8) candidate = true;
                    else
                    {
                        ulong e = BitConverter.ToUInt64(entries, i * 8);
                        candidate = (e & (3UL << 62)) != 0; // bit 63 present, bit 62 swapped
                    }
                    if (!candidate && data.Length > 0)
                    {
                        ulong off = page * Page;
                        while (extent < data.Length && data[extent].End <= off) extent++;
                        candidate = extent < data.Length && data[extent].Start < off + Page;
                    }
                    if (!candidate) continue;
                    ulong gpa = region.GuestAddress + page * Page;
                    if (runLength > 0 && runStart + runLength == gpa) runLength += Page;
                    else
                    {
                        if (runLength > 0) yield return (runStart, runLength);
                        runStart = gpa;
                        runLength = Page;
                    }
                }
            }
            if (runLength > 0) yield return (runStart, runLength);
        }
    }

    /// <summary>Data extents (SEEK_DATA/SEEK_HOLE) of the backing file within [offset, offset+length), relative to offset.</summary>
    private (ulong Start, ulong End)[] FileDataExtents(ulong offset, ulong length)
    {
        var result = new List<(ulong, ulong)>();
        int fd = (int)_backingFile!.DangerousGetHandle();
        long pos = (long)offset, end = (long)(offset + length);
        while (pos < end)
        {
            long data = Descriptors.Seek(fd, pos, Descriptors.SeekData);
            if (data < 0)
            {
                if (Errno.Last == Errno.ENXIO) break; // no data after pos
                return [(0, length)]; // SEEK_DATA unsupported: treat all as data
            }
            if (data >= end) break;
            long hole = Descriptors.Seek(fd, data, Descriptors.SeekHole);
            if (hole < 0) return [(0, length)];
            result.Add(((ulong)(data - (long)offset), (ulong)(Math.Min(hole, end) - (long)offset)));
            pos = hole;
        }
        return [.. result];
    }

    /// <summary>True when [gpa, gpa+length) lies wholly inside one RAM region.</summary>
    public bool Contains(ulong gpa, ulong length) => FindRegion(gpa, length) is not null;

    /// <summary>Returns the host view of [gpa, gpa+length), or false when any byte of it is outside RAM.</summary>
    public bool TryGetSpan(ulong gpa, int length, out Span<byte> span)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this); // every accessor comes through here or GetReadOnlySpan
        if (length < 0 || FindRegion(gpa, (ulong)length) is not { } r)
        {
            span = default;
            return false;
        }
        if (_dirty is { } dirty && length > 0) MarkPages(dirty[r.Slot], gpa - r.GuestAddress, (ulong)length);
        span = new Span<byte>((void*)(r.HostAddress + (nint)(gpa - r.GuestAddress)), length);
        return true;
    }

    /// <summary>
    /// A read-only view of [gpa, gpa+length) that does not count as a write for dirty-page tracking
    /// (<see cref="StartDirtyTracking"/>). Throws <see cref="GuestMemoryException"/> outside RAM.
    /// </summary>
    public ReadOnlySpan<byte> GetReadOnlySpan(ulong gpa, int length)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (length < 0 || FindRegion(gpa, (ulong)length) is not { } r)
            throw new GuestMemoryException(gpa, (ulong)Math.Max(0, length));
        return new ReadOnlySpan<byte>((void*)(r.HostAddress + (nint)(gpa - r.GuestAddress)), length);
    }

    /// <summary>True while host writes are being tracked (<see cref="StartDirtyTracking"/>).</summary>
    public bool IsDirtyTracking => Volatile.Read(ref _dirty) is not null;

    /// <summary>
    /// Starts (or restarts, clearing) tracking of the pages the host writes through the mutable accessors
    /// (<see cref="GetSpan"/>, <see cref="TryGetSpan"/>, <see cref="Write"/>, <see cref="Write{T}"/>,
    /// <see cref="Clear"/>): for diff snapshots, since KVM's dirty log only sees the guest's own writes.
    /// A span handed out counts as written whether or not it is (a safe over-approximation). Off, the
    /// accessors cost one null check.
    /// </summary>
    public void StartDirtyTracking()
    {
        var maps = new ulong[_regions.Length][];
        for (int i = 0; i < maps.Length; i++) maps[i] = new ulong[(_regions[i].Size / MemoryLayout.PageSize + 63) / 64];
        Volatile.Write(ref _dirty, maps);
    }

    public void StopDirtyTracking() => Volatile.Write(ref _dirty, null);

    /// <summary>
    /// ORs the host-written pages of <paramref name="region"/> (bit i = page i of the region) into
    /// <paramref name="into"/> and clears them. Returns false (and changes nothing) when tracking is off.
    /// </summary>
    public bool TakeDirtyPages(GuestRegion region, Span<ulong> into)
    {
        if (Volatile.Read(ref _dirty) is not { } dirty) return false;
        var map = dirty[region.Slot];
        if (into.Length < map.Length) throw new ArgumentException($"bitmap of {into.Length} words, region needs {map.Length}", nameof(into));
        for (int i = 0; i < map.Length; i++) into[i] |= Interlocked.Exchange(ref map[i], 0);
        return true;
    }

    /// <summary>Marks [gpa, gpa+length) as host-written (no-op when tracking is off or outside RAM).</summary>
    public void MarkDirty(ulong gpa, ulong length)
    {
        if (Volatile.Read(ref _dirty) is { } dirty && length > 0 && FindRegion(gpa, length) is { } r)
            MarkPages(dirty[r.Slot], gpa - r.GuestAddress, length);
    }

    private static void MarkPages(ulong[] map, ulong offset, ulong length)
    {
        ulong first = offset / MemoryLayout.PageSize, last = (offset + length - 1) / MemoryLayout.PageSize;
        for (ulong p = first; p <= last; p++)
        {
            ulong bit = 1UL << (int)(p % 64);
            // Most writes hit a page already marked: read before the atomic.
            if ((Volatile.Read(ref map[p / 64]) & bit) == 0) Interlocked.Or(ref map[p / 64], bit);
        }
    }

    /// <summary>Returns the host view of [gpa, gpa+length) or throws <see cref="GuestMemoryException"/>.</summary>
    public Span<byte> GetSpan(ulong gpa, int length)
    {
        if (!TryGetSpan(gpa, length, out var span))
            throw new GuestMemoryException(gpa, (ulong)Math.Max(0, length));
        return span;
    }

    public void Read(ulong gpa, Span<byte> destination) => GetReadOnlySpan(gpa, destination.Length).CopyTo(destination);

    public void Write(ulong gpa, ReadOnlySpan<byte> source) => source.CopyTo(GetSpan(gpa, source.Length));

    /// <summary>Reads an unmanaged little-endian value at <paramref name="gpa"/> (no alignment required).</summary>
    public T Read<T>(ulong gpa) where T : unmanaged =>
        Unsafe.ReadUnaligned<T>(ref MemoryMarshal.GetReference(GetReadOnlySpan(gpa, sizeof(T))));

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

    /// <summary>
    /// Unmaps a region this class mapped. munmap of a whole mapping we made fails only on a bug (EINVAL); there is
    /// nothing a dispose or cleanup path could do about it, so its result is not checked.
    /// </summary>
    private static void Unmap(GuestRegion r) => _ = Mman.Unmap(r.HostAddress, (nuint)r.Size);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var r in _regions) Unmap(r);
        _backingFile?.Dispose();
    }
}
