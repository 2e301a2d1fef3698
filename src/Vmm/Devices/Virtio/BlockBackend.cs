using Microsoft.Win32.SafeHandles;

using FireSharp.Kvm.Files;
using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>Storage behind a virtio-blk device. Failures are <see cref="IOException"/>s (the guest then gets IOERR).</summary>
public interface IBlockBackend : IDisposable
{
    /// <summary>Size in bytes (a multiple of 512).</summary>
    ulong SizeBytes { get; }

    bool IsReadOnly { get; }

    /// <summary>Fills all of <paramref name="destination"/> from byte <paramref name="offset"/>.</summary>
    void Read(ulong offset, Span<byte> destination);

    /// <summary>Writes all of <paramref name="source"/> at byte <paramref name="offset"/>.</summary>
    void Write(ulong offset, ReadOnlySpan<byte> source);

    /// <summary>Returns only when everything written so far is durable on the host.</summary>
    void Flush();
}

/// <summary>A raw disk image file, read and written in place with pread/pwrite, flushed with fdatasync.</summary>
public sealed class RawImageBackend : IBlockBackend
{
    public const int SectorSize = 512;

    private readonly SafeFileHandle _handle;

    private RawImageBackend(string path, SafeFileHandle handle, ulong size, bool readOnly)
    {
        Path = path;
        _handle = handle;
        SizeBytes = size;
        IsReadOnly = readOnly;
    }

    public string Path { get; }
    public ulong SizeBytes { get; }
    public bool IsReadOnly { get; }

    /// <summary>
    /// Opens an image, or throws <see cref="VirtioConfigException"/> naming <paramref name="field"/>: missing,
    /// not a regular file, unreadable (or not writable for a read-write drive), or not a multiple of 512 bytes.
    /// </summary>
    public static RawImageBackend Open(string path, bool readOnly, string field = "drive")
    {
        ArgumentNullException.ThrowIfNull(path);
        if (PreopenedFiles.Take(path, readOnly) is { } given) return FromHandle(path, given, readOnly, field); // a jailed worker's drive
        if (PathPolicy.ForThisProcess is { } policy) // an unjailed worker of a daemon: the daemon's rule, on the fd that is used
        {
            try
            {
                return FromHandle(path, policy.Open(path, PathKind.Drive, writable: !readOnly), readOnly, field);
            }
            catch (PathPolicyException e)
            {
                throw new VirtioConfigException(field, e.Reason == PathRefusal.NotFound ? VirtioConfigError.ImageNotFound : VirtioConfigError.NotARegularFile,
                    $"drive image {path} refused by the daemon's path policy: {e.Message}");
            }
        }
        if (Directory.Exists(path))
            throw new VirtioConfigException(field, VirtioConfigError.NotARegularFile, $"drive image {path} is a directory");
        if (!File.Exists(path))
            throw new VirtioConfigException(field, VirtioConfigError.ImageNotFound, $"drive image not found: {path}");
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            if (!readOnly && CanRead(path))
                throw new VirtioConfigException(field, VirtioConfigError.ImageNotWritable,
                    $"drive image {path} cannot be opened for writing ({e.Message}); add :ro for a read-only drive");
            throw new VirtioConfigException(field, VirtioConfigError.ImageUnreadable, $"drive image {path} cannot be read: {e.Message}");
        }
        return FromHandle(path, handle, readOnly, field);
    }

    private static RawImageBackend FromHandle(string path, SafeFileHandle handle, bool readOnly, string field)
    {
        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length % SectorSize != 0)
                throw new VirtioConfigException(field, VirtioConfigError.ImageSizeNotSectorMultiple,
                    $"drive image {path} is {length} bytes, not a multiple of {SectorSize}");
            return new RawImageBackend(path, handle, (ulong)length, readOnly);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static bool CanRead(string path)
    {
        try
        {
            using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return true;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return false;
        }
    }

    public void Read(ulong offset, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_handle, destination, checked((long)offset));
            if (n <= 0) throw new IOException($"unexpected end of {Path} at byte {offset}");
            destination = destination[n..];
            offset += (ulong)n;
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> source)
    {
        if (IsReadOnly) throw new IOException($"{Path} is read-only");
        RandomAccess.Write(_handle, source, checked((long)offset)); // writes all of it or throws
    }

    public void Flush()
    {
        if (IsReadOnly) return;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            if (Libc.FdataSync((int)_handle.DangerousGetHandle()) != 0)
                throw Errno.LastIOError($"fdatasync {Path}");
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    public void Dispose() => _handle.Dispose();
}
