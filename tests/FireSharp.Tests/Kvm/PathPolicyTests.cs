using CsCheck;
using FireSharp.Kvm.Files;

namespace FireSharp.Tests.Kvm;

/// <summary>
/// PathPolicy: lexical root matching (properties) and openat2-beneath opening of real files, FIFOs, devices and
/// symlinks. <see cref="PathPolicyWalkTests"/> runs the same cases with the O_NOFOLLOW walk forced (the fallback
/// for kernels without openat2).
/// </summary>
public class PathPolicyTests : IDisposable
{
    /// <summary>Whether the policies under test resolve by the O_NOFOLLOW walk instead of openat2.</summary>
    protected virtual bool Walk => false;

    private readonly string _dir = Directory.CreateTempSubdirectory("fs-pathpolicy-").FullName;
    private readonly string _root;
    private readonly string _outside;

    public PathPolicyTests()
    {
        _root = Path.Combine(_dir, "root");
        _outside = Path.Combine(_dir, "outside");
        Directory.CreateDirectory(Path.Combine(_root, "sub"));
        Directory.CreateDirectory(_outside);
        File.WriteAllBytes(Path.Combine(_root, "sub", "disk.img"), new byte[4096]);
        File.WriteAllBytes(Path.Combine(_outside, "secret.img"), new byte[4096]);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (disposing) Directory.Delete(_dir, recursive: true);
    }

    private PathPolicy Policy(bool blocks = false) => new([_root], blocks) { NoFollowWalk = Walk };

    [Fact]
    public void A_regular_file_inside_the_root_opens_read_write_and_read_only()
    {
        string disk = Path.Combine(_root, "sub", "disk.img");
        using (var rw = Policy().Open(disk, PathKind.Drive, writable: true))
        {
            RandomAccess.Write(rw, new byte[] { 7 }, 0);
        }
        using var ro = Policy().Open(disk, PathKind.File);
        Assert.Equal(4096, RandomAccess.GetLength(ro));
        var b = new byte[1];
        RandomAccess.Read(ro, b, 0);
        Assert.Equal(7, b[0]);
    }

    [Fact]
    public void A_path_outside_every_root_is_refused_as_outside()
    {
        var e = Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_outside, "secret.img"), PathKind.Drive));
        Assert.Equal(PathRefusal.OutsideRoots, e.Reason);
        Assert.Contains("outside the allowed roots", e.Message);
        Assert.Contains(_root, e.Message);
        // A sibling whose name starts with the root's is not inside it.
        Directory.CreateDirectory(_root + "x");
        File.WriteAllBytes(Path.Combine(_root + "x", "a.img"), new byte[512]);
        Assert.Equal(PathRefusal.OutsideRoots, Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_root + "x", "a.img"), PathKind.Drive)).Reason);
    }

    [Fact]
    public void Symlinks_that_leave_the_root_are_refused_and_ones_that_stay_are_followed()
    {
        File.CreateSymbolicLink(Path.Combine(_root, "escape.img"), Path.Combine(_outside, "secret.img"));
        File.CreateSymbolicLink(Path.Combine(_root, "relative-escape.img"), "../outside/secret.img");
        File.CreateSymbolicLink(Path.Combine(_root, "inside.img"), "sub/disk.img");
        Directory.CreateSymbolicLink(Path.Combine(_root, "dirlink"), "../outside");
        foreach (var name in new[] { "escape.img", "relative-escape.img", "dirlink/secret.img" })
        {
            var e = Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_root, name), PathKind.Drive, writable: true));
            Assert.Equal(PathRefusal.Escapes, e.Reason);
        }
        if (Walk)
        {
            // The walk follows no symlink, not even one that stays inside; and says why.
            var e = Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_root, "inside.img"), PathKind.Drive, writable: true));
            Assert.Equal(PathRefusal.Escapes, e.Reason);
            Assert.Contains("no symlink is followed", e.Message);
            return;
        }
        using var ok = Policy().Open(Path.Combine(_root, "inside.img"), PathKind.Drive, writable: true);
        Assert.Equal(4096, RandomAccess.GetLength(ok));
    }

    [Fact]
    public void Fifos_devices_sockets_and_directories_are_not_drives()
    {
        string fifo = Path.Combine(_root, "fifo");
        MakeFifo(fifo);
        Assert.Equal(PathRefusal.WrongType, Assert.Throws<PathPolicyException>(() => Policy().Open(fifo, PathKind.Drive, writable: true)).Reason);
        Assert.Equal(PathRefusal.WrongType, Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_root, "sub"), PathKind.Drive)).Reason);
        Assert.Equal(PathRefusal.WrongType, Assert.Throws<PathPolicyException>(() => Policy().Open(Path.Combine(_root, "sub", "disk.img"), PathKind.Directory)).Reason);
        var dev = new PathPolicy(["/dev"], allowBlockDevices: true) { NoFollowWalk = Walk };
        var e = Assert.Throws<PathPolicyException>(() => dev.Open("/dev/null", PathKind.Drive));
        Assert.Equal(PathRefusal.WrongType, e.Reason);
        Assert.Contains("character device", e.Message);
        using var d = Policy().Open(Path.Combine(_root, "sub"), PathKind.Directory);
        Assert.False(d.IsInvalid);
    }

    [Fact]
    public void Malformed_paths_are_refused_before_any_lookup()
    {
        foreach (var p in new[] { "relative/x", "", _root + "/sub/../sub/disk.img", _root + "/./sub/disk.img", _root + "/a\0b" })
            Assert.Equal(PathRefusal.Malformed, Assert.Throws<PathPolicyException>(() => Policy().Open(p, PathKind.Drive)).Reason);
        Assert.Equal(PathRefusal.NotFound, Assert.Throws<PathPolicyException>(() => Policy().Open(_root + "/nope.img", PathKind.Drive)).Reason);
    }

    [Fact]
    public void A_new_name_must_be_free_and_its_parent_inside_a_root()
    {
        using (var parent = Policy().CheckCreatable(Path.Combine(_root, "sub", "snap1"))) Assert.False(parent.IsInvalid);
        Assert.Equal(PathRefusal.Exists, Assert.Throws<PathPolicyException>(() => Policy().CheckCreatable(Path.Combine(_root, "sub", "disk.img"))).Reason);
        Assert.Equal(PathRefusal.OutsideRoots, Assert.Throws<PathPolicyException>(() => Policy().CheckCreatable(Path.Combine(_outside, "snap"))).Reason);
        Directory.CreateSymbolicLink(Path.Combine(_root, "out"), _outside);
        Assert.Equal(PathRefusal.Escapes, Assert.Throws<PathPolicyException>(() => Policy().CheckCreatable(Path.Combine(_root, "out", "snap"))).Reason);
    }

    [Fact]
    public void A_symlinked_directory_on_the_way_is_followed_only_by_openat2_and_a_proc_magic_link_never()
    {
        Directory.CreateSymbolicLink(Path.Combine(_root, "linkdir"), "sub");
        string viaLink = Path.Combine(_root, "linkdir", "disk.img");
        if (Walk) Assert.Equal(PathRefusal.Escapes, Assert.Throws<PathPolicyException>(() => Policy().Open(viaLink, PathKind.Drive)).Reason);
        else
        {
            using var followed = Policy().Open(viaLink, PathKind.Drive); // openat2 follows a relative symlink that stays inside
            Assert.Equal(4096, RandomAccess.GetLength(followed));
        }
        var proc = new PathPolicy(["/proc"], allowBlockDevices: false) { NoFollowWalk = Walk };
        Assert.Equal(PathRefusal.Escapes, Assert.Throws<PathPolicyException>(() => proc.Open("/proc/self/root/etc/hostname", PathKind.File)).Reason);
    }

    /// <summary>mkfifo(1) (the test project has no P/Invoke of its own).</summary>
    internal static void MakeFifo(string path)
    {
        using var p = System.Diagnostics.Process.Start("mkfifo", [path])!;
        Assert.True(p.WaitForExit(30_000), "mkfifo did not finish");
        Assert.Equal(0, p.ExitCode);
    }

    private static readonly Gen<string> Name = Gen.String[Gen.Char["abc.-"], 1, 4].Where(n => n is not ("." or ".."));
    private static readonly Gen<string> AbsPath = Name.Array[0, 4].Select(parts => "/" + string.Join('/', parts));

    [Fact]
    public void Locate_finds_a_root_exactly_when_the_path_is_the_root_or_below_it_by_whole_components()
    {
        Gen.Select(AbsPath, AbsPath).Sample((root, path) =>
        {
            var policy = new PathPolicy([root], false);
            string r = PathPolicy.Normalize(root, out _)!, p = PathPolicy.Normalize(path, out _)!;
            bool inside = r == "/" || p == r || p.StartsWith(r + "/", StringComparison.Ordinal);
            var found = policy.Locate(p);
            Assert.Equal(inside, found is not null);
            if (found is { } f) Assert.Equal(p, f.Relative == "." ? f.Root : (f.Root == "/" ? "/" + f.Relative : f.Root + "/" + f.Relative));
        });
    }

    [Fact]
    public void Locate_prefers_the_longest_containing_root()
    {
        Gen.Select(AbsPath, Name, Name).Sample((root, a, b) =>
        {
            string r = PathPolicy.Normalize(root, out _)!;
            string deeper = (r == "/" ? "" : r) + "/" + a;
            var policy = new PathPolicy([r, deeper], false);
            Assert.Equal(deeper, policy.Locate(deeper + "/" + b)!.Value.Root);
        });
    }
}

/// <summary>The same cases as <see cref="PathPolicyTests"/>, resolved by the O_NOFOLLOW walk (the fallback without openat2).</summary>
public sealed class PathPolicyWalkTests : PathPolicyTests
{
    protected override bool Walk => true;
}
