using FireSharp.Kvm.Files;
using FireSharp.Memory;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Boot;

/// <summary>
/// Random-access bytes of a kernel image: a file read with pread (so segments go straight into guest memory,
/// one copy) or an in-memory buffer. Callers check every range with <see cref="Has"/> before reading.
/// </summary>
internal abstract class ImageSource : IDisposable
{
    public abstract string Name { get; }
    public abstract long Length { get; }

    /// <summary>True when [offset, offset+size) lies within the image. Overflow-free for hostile values.</summary>
    public bool Has(ulong offset, ulong size) => offset <= (ulong)Length && size <= (ulong)Length - offset;

    /// <summary>Reads exactly <paramref name="destination"/>.Length bytes at <paramref name="offset"/>.</summary>
    public abstract void ReadExactly(long offset, Span<byte> destination);

    public byte[] ReadArray(long offset, int count)
    {
        var buffer = new byte[count];
        ReadExactly(offset, buffer);
        return buffer;
    }

    /// <summary>Copies [offset, offset+size) of the image to guest memory at <paramref name="gpa"/>, in chunks.</summary>
    public void CopyToGuest(GuestMemory mem, ulong gpa, long offset, ulong size)
    {
        while (size > 0)
        {
            int chunk = (int)Math.Min(size, GuestChunk);
            ReadExactly(offset, mem.GetSpan(gpa, chunk));
            offset += chunk;
            gpa += (ulong)chunk;
            size -= (ulong)chunk;
        }
    }

    /// <summary>Largest single span handed to the guest-memory accessors (they take int lengths).</summary>
    internal const int GuestChunk = 1 << 30;

    public virtual void Dispose() { }

    /// <summary>Whether <paramref name="marker"/> occurs anywhere in the image (read in 1 MiB chunks).</summary>
    public bool Contains(ReadOnlySpan<byte> marker)
    {
        var buffer = new byte[1 << 20];
        long offset = 0;
        int carry = 0;
        while (offset < Length)
        {
            int n = (int)Math.Min(buffer.Length - carry, Length - offset);
            ReadExactly(offset, buffer.AsSpan(carry, n));
            offset += n;
            int length = carry + n;
            if (buffer.AsSpan(0, length).IndexOf(marker) >= 0) return true;
            carry = Math.Min(marker.Length - 1, length);
            buffer.AsSpan(length - carry, carry).CopyTo(buffer);
        }
        return false;
    }

    /// <summary>
    /// Opens a kernel or initrd. In an unjailed worker of a daemon (<see cref="PathPolicy.ForThisProcess"/>) through
    /// the daemon's path policy, so the file read is the one the policy checked (the fd is the one used); otherwise
    /// by path (a local <c>firesharp run</c>; a jailed worker, whose kernel its jailer bound in from a checked fd).
    /// </summary>
    public static ImageSource OpenFile(string path, BootFile file)
    {
        string what = file == BootFile.Initrd ? "initrd" : "kernel";
        if (PathPolicy.ForThisProcess is { } policy)
        {
            SafeFileHandle checkedHandle;
            try
            {
                checkedHandle = policy.Open(path, PathKind.File);
            }
            catch (PathPolicyException e)
            {
                throw new BootException(e.Reason == PathRefusal.NotFound ? BootErrorReason.FileNotFound : BootErrorReason.FileUnreadable,
                    $"{what} file {path} refused by the daemon's path policy: {e.Message}", e) { File = file };
            }
            try
            {
                return new FileImageSource(checkedHandle, path, file, RandomAccess.GetLength(checkedHandle));
            }
            catch
            {
                checkedHandle.Dispose();
                throw;
            }
        }
        try
        {
            var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            try
            {
                return new FileImageSource(handle, path, file, RandomAccess.GetLength(handle));
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BootException(BootErrorReason.FileNotFound, $"{what} file not found: {path}", e) { File = file };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new BootException(BootErrorReason.FileUnreadable, $"cannot open {what} file {path}: {e.Message}", e) { File = file };
        }
    }
}

internal sealed class MemoryImageSource(ReadOnlyMemory<byte> bytes, string name) : ImageSource
{
    public override string Name => name;
    public override long Length => bytes.Length;

    public override void ReadExactly(long offset, Span<byte> destination)
    {
        if (!Has((ulong)offset, (ulong)destination.Length))
            throw new BootException(BootErrorReason.Truncated, $"{name}: read of {destination.Length} bytes at offset {offset} is past the end ({Length} bytes)");
        bytes.Span.Slice((int)offset, destination.Length).CopyTo(destination);
    }
}

internal sealed class FileImageSource(SafeFileHandle handle, string path, BootFile file, long length) : ImageSource
{
    public override string Name => path;
    public override long Length => length;

    public override void ReadExactly(long offset, Span<byte> destination)
    {
        if (!Has((ulong)offset, (ulong)destination.Length))
            throw new BootException(BootErrorReason.Truncated, $"{path}: read of {destination.Length} bytes at offset {offset} is past the end ({Length} bytes)") { File = file };
        try
        {
            while (!destination.IsEmpty)
            {
                int n = RandomAccess.Read(handle, destination, offset);
                if (n <= 0)
                    throw new BootException(BootErrorReason.Truncated, $"{path}: file shrank while reading (end at offset {offset}, expected {Length} bytes)") { File = file };
                destination = destination[n..];
                offset += n;
            }
        }
        catch (IOException e)
        {
            throw new BootException(BootErrorReason.FileUnreadable, $"cannot read {path} at offset {offset}: {e.Message}", e) { File = file };
        }
    }

    public override void Dispose()
    {
        handle.Dispose();
        base.Dispose();
    }
}

internal static class GuestFill
{
    /// <summary>Zeroes [gpa, gpa+size) in chunks (size may exceed int.MaxValue).</summary>
    public static void Zero(GuestMemory mem, ulong gpa, ulong size)
    {
        while (size > 0)
        {
            int chunk = (int)Math.Min(size, ImageSource.GuestChunk);
            mem.Clear(gpa, chunk);
            gpa += (ulong)chunk;
            size -= (ulong)chunk;
        }
    }
}
