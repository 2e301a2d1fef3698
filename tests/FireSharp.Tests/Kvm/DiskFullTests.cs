using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Kvm;

/// <summary>
/// "No space left" is decided by errno, never by message text: what .NET throws for a write to a full device
/// carries ENOSPC as its HResult, and a message that merely says so is not a full disk.
/// </summary>
public sealed class DiskFullTests
{
    [Fact]
    public void A_write_to_a_full_device_is_disk_full_by_its_errno()
    {
        // /dev/full: every write fails with ENOSPC, as on a full file system.
        var e = Assert.ThrowsAny<IOException>(() =>
        {
            using var stream = new FileStream("/dev/full", FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
            stream.Write(new byte[4096]);
        });
        Assert.Equal(Errno.ENOSPC, e.HResult);
        Assert.True(FileSystem.IsDiskFull(e));
    }

    [Fact]
    public void RandomAccess_writes_to_a_full_device_are_disk_full_too()
    {
        using var handle = File.OpenHandle("/dev/full", FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        var e = Assert.ThrowsAny<IOException>(() => RandomAccess.Write(handle, new byte[4096], 0));
        Assert.True(FileSystem.IsDiskFull(e), $"HResult {e.HResult}: {e.Message}");
    }

    [Theory]
    [InlineData(Errno.ENOSPC, true)]
    [InlineData(Errno.EDQUOT, true)]
    [InlineData(Errno.EIO, false)]
    public void An_interop_error_is_disk_full_by_its_errno(int errno, bool full) =>
        Assert.Equal(full, FileSystem.IsDiskFull(Errno.IOError("write x", errno)));

    [Fact]
    public void A_message_that_says_no_space_is_not_a_full_disk_without_the_errno()
    {
        Assert.False(FileSystem.IsDiskFull(new IOException("write x: No space left on device", Errno.EIO)));
        Assert.False(FileSystem.IsDiskFull(new IOException("Disk quota exceeded")));
    }
}
