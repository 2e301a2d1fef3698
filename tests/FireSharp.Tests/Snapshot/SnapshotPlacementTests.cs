using FireSharp.Daemon.Vms;
using FireSharp.Kvm.Files;
using FireSharp.Snapshot;

namespace FireSharp.Tests.Snapshot;

/// <summary>
/// SnapshotPlacement (issue 18): the daemon puts a worker's snapshot where CreateSnapshot.dir asked through the
/// parent fd the path policy opened, so a parent swapped for a symlink out of the root after the check changes
/// nothing: the snapshot lands in the directory that was checked, signed, 0700/0400, and nothing appears outside.
/// Both by rename (same file system) and by copy (across file systems, from /dev/shm).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SnapshotPlacementTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fs-placement-").FullName;
    private readonly string _shm = Path.Combine("/dev/shm", "fs-placement-" + Guid.NewGuid().ToString("N"));
    private static readonly SnapshotKey Key = new("test-key", Enumerable.Range(1, SnapshotKey.Bytes).Select(i => (byte)i).ToArray());

    public void Dispose()
    {
        Directory.Delete(_dir, recursive: true);
        if (Directory.Exists(_shm)) Directory.Delete(_shm, recursive: true);
    }

    /// <summary>A worker's output: a state file, a sparse memory file.</summary>
    private static string Staging(string parent)
    {
        string staging = Path.Combine(parent, "outbox", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(staging);
        File.WriteAllBytes(Path.Combine(staging, SnapshotWriter.StateFileName), "not parsed here"u8.ToArray());
        using (var m = File.Create(Path.Combine(staging, SnapshotWriter.MemoryFileName)))
        {
            m.SetLength(1 << 20);
            m.Position = 8192;
            m.Write([1, 2, 3]);
        }
        return staging;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_parent_swapped_for_a_symlink_out_of_the_root_after_the_check_changes_nothing(bool acrossFileSystems)
    {
        string root = Path.Combine(_dir, "root"), outside = Path.Combine(_dir, "outside");
        Directory.CreateDirectory(Path.Combine(root, "parent"));
        Directory.CreateDirectory(outside);
        var policy = new PathPolicy([root], allowBlockDevices: false);
        string target = Path.Combine(root, "parent", "snap");
        using var parent = policy.CheckCreatable(target, out string name);
        Assert.Equal("snap", name);

        // After the check: the parent is moved away and a symlink out of the root takes its name.
        Directory.Move(Path.Combine(root, "parent"), Path.Combine(root, "moved"));
        Directory.CreateSymbolicLink(Path.Combine(root, "parent"), outside);
        Directory.CreateDirectory(_shm);
        string staging = Staging(acrossFileSystems ? _shm : _dir);
        SnapshotPlacement.Place(staging, parent, name, target, Key);

        Assert.Empty(Directory.GetFileSystemEntries(outside));
        string placed = Path.Combine(root, "moved", "snap");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(placed));
        foreach (var f in new[] { SnapshotWriter.StateFileName, SnapshotWriter.MemoryFileName, SnapshotMac.FileName })
            Assert.Equal(UnixFileMode.UserRead, File.GetUnixFileMode(Path.Combine(placed, f)));
        Assert.False(Directory.Exists(staging));
        // Signed over what was placed: the chain verifies with the key (memory identity included).
        foreach (var f in SnapshotFiles.OpenVerifiedChain(placed, new SnapshotKeys([Key]))) f.Handle.Dispose();
        var memory = File.ReadAllBytes(Path.Combine(placed, SnapshotWriter.MemoryFileName));
        Assert.Equal(1 << 20, memory.Length);
        Assert.Equal(new byte[] { 1, 2, 3 }, memory[8192..8195]);
    }

    [Fact]
    public void A_symlink_or_a_directory_in_the_workers_output_is_refused_and_never_followed()
    {
        string root = Path.Combine(_dir, "root");
        Directory.CreateDirectory(root);
        var policy = new PathPolicy([root], allowBlockDevices: false);
        string secret = Path.Combine(_dir, "secret");
        File.WriteAllText(secret, "x");
        File.SetUnixFileMode(secret, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        string staging = Staging(_dir);
        File.CreateSymbolicLink(Path.Combine(staging, "diff"), secret);
        using var parent = policy.CheckCreatable(Path.Combine(root, "snap"), out string name);
        var e = Assert.Throws<SnapshotException>(() => SnapshotPlacement.Place(staging, parent, name, Path.Combine(root, "snap"), Key));
        Assert.Equal(SnapshotErrorReason.Corrupt, e.Reason);
        Assert.False(Directory.Exists(Path.Combine(root, "snap")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead, File.GetUnixFileMode(secret)); // not chmodded through the link
    }

    [Fact]
    public void A_target_taken_meanwhile_is_already_exists()
    {
        string root = Path.Combine(_dir, "root");
        Directory.CreateDirectory(root);
        var policy = new PathPolicy([root], allowBlockDevices: false);
        using var parent = policy.CheckCreatable(Path.Combine(root, "snap"), out string name);
        Directory.CreateDirectory(Path.Combine(root, "snap"));
        var e = Assert.Throws<SnapshotException>(() => SnapshotPlacement.Place(Staging(_dir), parent, name, Path.Combine(root, "snap"), Key));
        Assert.Equal(SnapshotErrorReason.DirectoryExists, e.Reason);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(root, "snap")));
    }
}
