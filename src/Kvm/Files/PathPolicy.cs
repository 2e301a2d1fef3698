using System.Globalization;
using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Files;

/// <summary>What a named path must be: a drive image, a kernel or initrd (a regular file), or a directory.</summary>
public enum PathKind
{
    /// <summary>A regular file, or a block device where the policy allows them.</summary>
    Drive,
    /// <summary>A regular file (a kernel, an initrd, a layer).</summary>
    File,
    /// <summary>A directory (opened O_PATH).</summary>
    Directory,
}

/// <summary>Why a path was refused: <see cref="OutsideRoots"/> is a permission matter, the rest are bad arguments.</summary>
public enum PathRefusal
{
    /// <summary>Not absolute, a NUL, or a "." or ".." component.</summary>
    Malformed,
    /// <summary>Under none of the allowed roots (lexically).</summary>
    OutsideRoots,
    /// <summary>Inside a root by name, but its resolution (a symlink, a magic link) leads out of it.</summary>
    Escapes,
    /// <summary>Not the kind of file asked for (a FIFO, a device, a socket, a directory...).</summary>
    WrongType,
    /// <summary>It does not exist.</summary>
    NotFound,
    /// <summary>A name to be created is taken already.</summary>
    Exists,
    /// <summary>It exists but cannot be opened (permissions, or openat2 missing).</summary>
    Unopenable,
}

/// <summary>A path the policy refused; the message names the path but not the request field (the caller adds it).</summary>
public sealed class PathPolicyException(PathRefusal reason, string message) : Exception(message)
{
    public PathRefusal Reason { get; } = reason;
}

/// <summary>
/// The one rule for host paths named by an API client or a snapshot (docs/security.md): a path is used only if it
/// lies lexically under one of the configured roots, and it is opened from that root's directory fd with
/// openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a symlink that stays inside the root is followed and one
/// that leads out fails. The opened fd is then fstat'ed for its type, and that same fd is what gets used (the
/// daemon's lock fd, the jailer's fd handed to the worker): there is no check-then-open-again window. Without
/// openat2 (Linux before 5.6) the path is walked component by component with O_NOFOLLOW instead
/// (<see cref="NoFollowResolver"/>), which follows no symlink at all. Files are
/// first opened O_PATH and only reopened for I/O (through /proc/self/fd) once their type is known, so a FIFO or a
/// device is never opened for real.
/// </summary>
public sealed class PathPolicy
{
    /// <summary>
    /// The daemon's policy in an unjailed worker process: a drive that was not handed over open is opened through it
    /// (the same check, on the fd then used, as a jailer's), not by plain path. Null: by path (a local `firesharp run`,
    /// and processes that host machines for others, such as tests).
    /// </summary>
    public static PathPolicy? ForThisProcess { get; set; }

    /// <summary>A policy over <paramref name="roots"/> (absolute directories; "/" allows everything).</summary>
    public PathPolicy(IEnumerable<string> roots, bool allowBlockDevices)
    {
        ArgumentNullException.ThrowIfNull(roots);
        var list = new List<string>();
        foreach (var r in roots)
        {
            if (Normalize(r, out string? why) is not { } root) throw new ArgumentException($"allowed path root '{r}' {why}", nameof(roots));
            if (!list.Contains(root)) list.Add(root);
        }
        Roots = list;
        AllowBlockDevices = allowBlockDevices;
    }

    public IReadOnlyList<string> Roots { get; }
    public bool AllowBlockDevices { get; }

    /// <summary>
    /// Resolve by the O_NOFOLLOW walk (<see cref="NoFollowResolver"/>) instead of openat2: what happens by itself on a
    /// kernel without openat2 (ENOSYS), forced here for tests. The walk follows no symlink at all.
    /// </summary>
    public bool NoFollowWalk { get; init; }

    /// <summary>Set once openat2 gave ENOSYS: every later resolution walks.</summary>
    private static volatile bool s_noOpenat2;

    /// <summary>Whether this policy resolves by the walk (forced, or openat2 missing).</summary>
    public bool Walks => NoFollowWalk || s_noOpenat2;

    /// <summary>
    /// <paramref name="path"/> with repeated and trailing slashes removed, or null (and why) if it is not absolute,
    /// contains a NUL or has a "." or ".." component (refused rather than resolved lexically: the kernel would resolve
    /// ".." after a symlink differently).
    /// </summary>
    public static string? Normalize(string path, out string? why)
    {
        ArgumentNullException.ThrowIfNull(path);
        why = null;
        if (path.Contains('\0', StringComparison.Ordinal)) { why = "contains a NUL character"; return null; }
        if (!path.StartsWith('/')) { why = "is not an absolute path"; return null; }
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Any(p => p is "." or "..")) { why = "has a '.' or '..' component"; return null; }
        return "/" + string.Join('/', parts);
    }

    /// <summary>The longest root containing the normalized <paramref name="path"/> (at a component boundary) and the path relative to it ("." for the root itself).</summary>
    public (string Root, string Relative)? Locate(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        (string Root, string Relative)? best = null;
        foreach (var root in Roots)
        {
            string? relative = root == "/" ? (path.Length > 1 ? path[1..] : ".")
                : path == root ? "."
                : path.StartsWith(root + "/", StringComparison.Ordinal) ? path[(root.Length + 1)..]
                : null;
            if (relative is not null && (best is null || root.Length > best.Value.Root.Length)) best = (root, relative);
        }
        return best;
    }

    /// <summary>"/a, /b" (or "none").</summary>
    public string Describe() => Roots.Count == 0 ? "none" : string.Join(", ", Roots);

    /// <summary>
    /// Opens <paramref name="path"/> under the policy: a <see cref="PathKind.Directory"/> as O_PATH, a file
    /// read-only, or read-write for a <see cref="PathKind.Drive"/> with <paramref name="writable"/>. Throws
    /// <see cref="PathPolicyException"/>.
    /// </summary>
    public SafeFileHandle Open(string path, PathKind kind, bool writable = false)
    {
        var (root, relative) = Resolve(path);
        SafeFileHandle? pathFd = OpenBeneath(root, relative, PathOpen.OPath, path);
        try
        {
            CheckType(path, kind, PathOpen.Status(pathFd).Type);
            if (kind == PathKind.Directory)
            {
                var dir = pathFd; // the O_PATH fd itself: it now belongs to the caller
                pathFd = null;
                return dir;
            }
            // Reopen the very inode for I/O: /proc/self/fd/N names what the O_PATH fd holds, whatever the path now names.
            string self = "/proc/self/fd/" + ((int)pathFd.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);
            var file = PathOpen.Open(self, (writable ? PathOpen.ORdWr : PathOpen.ORdOnly), out int errno);
            if (file.IsInvalid)
                throw new PathPolicyException(PathRefusal.Unopenable, $"{path} cannot be opened {(writable ? "read-write" : "read-only")}: {Errno.Text(errno)}");
            return file;
        }
        finally
        {
            pathFd?.Dispose();
        }
    }

    /// <summary>
    /// Checks a path something is about to be created at (a snapshot directory, a socket): its parent must be a
    /// directory reached under a root without leaving it, and the name itself must not be taken. Returns the parent
    /// (O_PATH) for callers that can create relative to it.
    /// </summary>
    public SafeFileHandle CheckCreatable(string path) => CheckCreatable(path, out _);

    /// <summary>As <see cref="CheckCreatable(string)"/>, with the name to create relative to the returned parent (mkdirat, renameat).</summary>
    public SafeFileHandle CheckCreatable(string path, out string name)
    {
        var (root, relative) = Resolve(path);
        if (relative == ".") throw new PathPolicyException(PathRefusal.WrongType, $"{path} is an allowed root itself, not a new name under one");
        int slash = relative.LastIndexOf('/');
        string parentRelative = slash < 0 ? "." : relative[..slash];
        name = relative[(slash + 1)..];
        var parent = OpenBeneath(root, parentRelative, PathOpen.OPath | PathOpen.ODirectory, path);
        // One component relative to the checked parent, not followed: no resolution left to escape by.
        using var existing = DirFd.OpenAt(parent, name, PathOpen.OPath | PathOpen.ONoFollow, out _);
        if (!existing.IsInvalid)
        {
            parent.Dispose();
            throw new PathPolicyException(PathRefusal.Exists, $"{path} already exists");
        }
        return parent;
    }

    /// <summary>
    /// RESOLVE_BENEATH refuses absolute symlinks too (even to a place inside the root): a root's symlinks must be
    /// relative. Under the root "/" nothing can be left, so there only magic links are refused.
    /// </summary>
    private static ulong ResolutionFor(string root) => root == "/" ? PathOpen.ResolveNoMagicLinks : PathOpen.ResolveBeneath | PathOpen.ResolveNoMagicLinks;

    private (string Root, string Relative) Resolve(string path)
    {
        if (Normalize(path, out string? why) is not { } normal) throw new PathPolicyException(PathRefusal.Malformed, $"'{Trim(path)}' {why}");
        return Locate(normal) ?? throw new PathPolicyException(PathRefusal.OutsideRoots,
            $"{normal} is outside the allowed roots (AllowedPathRoots: {Describe()})");
    }

    private SafeFileHandle OpenBeneath(string root, string relative, int flags, string path)
    {
        using var rootFd = RootHandle(root, path);
        if (!Walks)
        {
            var fd = PathOpen.OpenBeneath(rootFd, relative, flags, ResolutionFor(root), out int errno);
            if (!fd.IsInvalid) return fd;
            if (errno != PathOpen.ENOSYS) throw Refused(path, root, errno, walked: false);
            fd.Dispose();
            s_noOpenat2 = true; // Linux before 5.6: walk from now on
        }
        var walked = NoFollowResolver.Open(rootFd, relative, flags, out int walkErrno);
        if (walked.IsInvalid) throw Refused(path, root, walkErrno, walked: true);
        return walked;
    }

    private static SafeFileHandle RootHandle(string root, string path)
    {
        var fd = PathOpen.Open(root, PathOpen.OPath | PathOpen.ODirectory, out int errno);
        if (fd.IsInvalid)
            throw new PathPolicyException(errno == PathOpen.ENOENT ? PathRefusal.NotFound : PathRefusal.Unopenable,
                $"{path}: its allowed root {root} cannot be opened: {Errno.Text(errno)}");
        return fd;
    }

    private static PathPolicyException Refused(string path, string root, int errno, bool walked) => errno switch
    {
        PathOpen.EXDEV or PathOpen.ELOOP when walked => new(PathRefusal.Escapes,
            $"{path} is reached through a symlink under its allowed root {root}, and without openat2(2) (Linux 5.6+) no symlink is followed"),
        PathOpen.EXDEV or PathOpen.ELOOP => new(PathRefusal.Escapes, $"{path} leads out of its allowed root {root} (through a symlink: only relative ones that stay inside are followed)"),
        PathOpen.ENOENT => new(PathRefusal.NotFound, $"{path} does not exist"),
        PathOpen.ENOTDIR => new(PathRefusal.WrongType, $"{path}: a component of it is not a directory"),
        _ => new(PathRefusal.Unopenable, $"{path} cannot be opened: {Errno.Text(errno)}"),
    };

    private void CheckType(string path, PathKind kind, uint type)
    {
        string? wrong = (kind, type) switch
        {
            (PathKind.Directory, PathOpen.SIfDir) => null,
            (PathKind.Directory, _) => "is not a directory",
            (_, PathOpen.SIfReg) => null,
            (PathKind.Drive, PathOpen.SIfBlk) => AllowBlockDevices ? null : "is a block device, and AllowBlockDevices is off",
            (_, PathOpen.SIfDir) => "is a directory",
            (_, PathOpen.SIfBlk) => "is a block device, not a regular file",
            (_, PathOpen.SIfChr) => "is a character device",
            (_, PathOpen.SIfIfo) => "is a FIFO",
            (_, PathOpen.SIfSock) => "is a socket",
            _ => "is not a regular file",
        };
        if (wrong is not null) throw new PathPolicyException(PathRefusal.WrongType, $"{path} {wrong}");
    }

    private static string Trim(string s) => s.Length <= 200 ? s.Replace("\0", "\\0", StringComparison.Ordinal) : s[..200].Replace("\0", "\\0", StringComparison.Ordinal) + "...";
}
