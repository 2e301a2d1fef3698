using System.Globalization;
using FireSharp.Kvm.Files;
using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// Copies a function's code directory into a daemon-private staging directory, which <c>mke2fs -d</c> then packs
/// (docs/security.md, "Function code"). The source is read only through fds: the directory itself is opened by the
/// path policy (<see cref="HostPaths"/>), and every entry under it is opened relative to its parent's fd with
/// O_NOFOLLOW, fstat'ed, and read through that same fd. So no symlink is ever followed on the host, and a path
/// swapped meanwhile cannot redirect the copy. Regular files and directories are copied (with their permission bits,
/// and their owner when the daemon is root). A symbolic link is kept as a link in the image, for the guest to
/// resolve, when its target is relative and stays inside the code directory; any other link, and FIFOs, devices and
/// sockets, are refused with InvalidArgument naming the field and the entry's relative path.
/// </summary>
internal sealed class CodeTree(string field, string directory, long maxBytes)
{
    private const int MaxDepth = 64;
    private static readonly bool s_root = Environment.IsPrivilegedProcess;

    public long Bytes { get; private set; }
    public int Entries { get; private set; }

    /// <summary>Copies <paramref name="source"/> (the code directory's O_PATH fd from the policy) into <paramref name="staging"/> (new, private).</summary>
    public void CopyTo(SafeFileHandle source, string staging) => CopyDirectory(source, "", staging, 0);

    private void CopyDirectory(SafeFileHandle dir, string relative, string target, int depth)
    {
        if (depth > MaxDepth) throw Refuse(relative, $"is nested more than {MaxDepth} directories deep");
        foreach (string name in List(dir, relative))
        {
            string rel = relative.Length == 0 ? name : relative + "/" + name;
            string dest = Path.Combine(target, name);
            using var entry = DirFd.OpenAt(dir, name, PathOpen.OPath | PathOpen.ONoFollow, out int errno);
            if (entry.IsInvalid) throw Refuse(rel, $"cannot be opened: {Errno.Text(errno)}");
            var st = PathOpen.Status(entry);
            Entries++;
            switch (st.Type)
            {
                case PathOpen.SIfReg:
                    CopyFile(entry, rel, dest, st);
                    break;
                case PathOpen.SIfDir:
                    Directory.CreateDirectory(dest);
                    CopyDirectory(entry, rel, dest, depth + 1);
                    SetModeAndOwner(dest, st);
                    break;
                case PathOpen.SIfLnk:
                    CopyLink(dir, name, rel, dest, st);
                    break;
                default:
                    throw Refuse(rel, $"is {TypeName(st.Type)}: only regular files, directories and relative symlinks that stay inside are packed");
            }
        }
    }

    /// <summary>The names in a directory, listed through its fd (/proc/self/fd/N names exactly that directory).</summary>
    private List<string> List(SafeFileHandle dir, string relative)
    {
        string self = "/proc/self/fd/" + ((int)dir.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);
        try
        {
            return Directory.EnumerateFileSystemEntries(self).Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Refuse(relative, $"cannot be listed: {e.Message}");
        }
    }

    private void CopyFile(SafeFileHandle entry, string rel, string dest, PathOpen.FileStatus st)
    {
        // The very inode that was fstat'ed, reopened for reading: a regular file, so the open cannot block or reach a device.
        string self = "/proc/self/fd/" + ((int)entry.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);
        using var file = PathOpen.Open(self, PathOpen.ORdOnly, out int errno);
        if (file.IsInvalid) throw Refuse(rel, $"cannot be read: {Errno.Text(errno)}");
        using (var output = new FileStream(dest, FileMode.CreateNew, FileAccess.Write))
        {
            var buffer = new byte[1 << 16];
            long offset = 0;
            while (true)
            {
                int n = RandomAccess.Read(file, buffer, offset);
                if (n <= 0) break;
                offset += n;
                Bytes += n; // what was read, not what stat said: a file growing meanwhile still hits the cap
                if (Bytes > maxBytes) throw VmApiException.Invalid(field, $"'{directory}' holds more than {maxBytes / (1024 * 1024)} MiB");
                output.Write(buffer, 0, n);
            }
        }
        SetModeAndOwner(dest, st);
    }

    private void CopyLink(SafeFileHandle dir, string name, string rel, string dest, PathOpen.FileStatus st)
    {
        string? target = DirFd.ReadLinkAt(dir, name, out int errno);
        if (target is null) throw Refuse(rel, $"is a symlink that cannot be read: {Errno.Text(errno)}");
        if (!StaysInside(rel, target))
            throw Refuse(rel, $"is a symlink to '{target}', which leads out of the code directory (only relative links that stay inside are packed)");
        File.CreateSymbolicLink(dest, target);
        if (s_root) Mounts.ChangeOwner(dest, st.Uid, st.Gid);
    }

    /// <summary>
    /// Whether a link at <paramref name="linkRelative"/> (relative to the code directory) whose target is
    /// <paramref name="target"/> resolves, lexically, to somewhere inside the code directory.
    /// </summary>
    internal static bool StaysInside(string linkRelative, string target)
    {
        if (target.Length == 0 || target.StartsWith('/') || target.Contains('\0', StringComparison.Ordinal)) return false;
        int depth = linkRelative.Split('/', StringSplitOptions.RemoveEmptyEntries).Length - 1; // the link's directory
        foreach (var part in target.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            depth += part == ".." ? -1 : 1;
            if (depth < 0) return false;
        }
        return true;
    }

    private static void SetModeAndOwner(string dest, PathOpen.FileStatus st)
    {
        if (OperatingSystem.IsWindows()) return;
        File.SetUnixFileMode(dest, (UnixFileMode)(st.Permissions & 0x1FF)); // rwx bits only: no setuid/setgid/sticky from a client's tree
        if (s_root) Mounts.ChangeOwner(dest, st.Uid, st.Gid);
    }

    private VmApiException Refuse(string relative, string why) =>
        VmApiException.Invalid(field, $"'{directory}': {(relative.Length == 0 ? "the directory itself" : relative)} {why}");

    private static string TypeName(uint type) => type switch
    {
        PathOpen.SIfIfo => "a FIFO",
        PathOpen.SIfChr => "a character device",
        PathOpen.SIfBlk => "a block device",
        PathOpen.SIfSock => "a socket",
        _ => "not a regular file",
    };
}
