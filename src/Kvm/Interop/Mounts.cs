using System.Runtime.InteropServices;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// mount(2), umount2(2), pivot_root(2), mknod(2), chown(2) and sethostname(2): what the jailer needs to build a VM's
/// root in its own mount namespace. Each call throws <see cref="JailSetupException"/> naming the step and errno.
/// </summary>
public static partial class Mounts
{
    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_BIND = 4096,
        MS_REC = 16384, MS_PRIVATE = 1 << 18;
    public const int MNT_DETACH = 2;
    public const uint S_IFCHR = 0x2000;

    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MountNative(string? source, string target, string? fsType, ulong flags, string? data);

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2Native(string target, int flags);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long PivotRootNative(long number, string newRoot, string putOld);

    [LibraryImport("libc", EntryPoint = "mknod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MknodNative(string path, uint mode, ulong dev);

    [LibraryImport("libc", EntryPoint = "lchown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LchownNative(string path, uint uid, uint gid);

    [LibraryImport("libc", EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int ChdirNative(string path);

    [LibraryImport("libc", EntryPoint = "sethostname", SetLastError = true)]
    private static partial int SetHostnameNative(ReadOnlySpan<byte> name, nint length);

    private const long SYS_pivot_root = 155;

    /// <summary>mount(2); <paramref name="source"/> and <paramref name="fsType"/> may be null.</summary>
    public static void Mount(string? source, string target, string? fsType, ulong flags, string? data = null) =>
        JailSetupException.Check(MountNative(source, target, fsType, flags, data), $"mount({source ?? "none"} on {target})");

    /// <summary>A bind mount of <paramref name="source"/> on <paramref name="target"/>, then remounted with <paramref name="flags"/> (MS_RDONLY, MS_NOSUID, ...).</summary>
    public static void Bind(string source, string target, ulong flags)
    {
        Mount(source, target, null, MS_BIND);
        // A bind mount takes the flags only through a remount.
        Mount(null, target, null, MS_REMOUNT | MS_BIND | flags);
    }

    /// <summary>Every mount below / stops propagating to and from the mount namespace it was copied from.</summary>
    public static void MakeAllPrivate() => Mount(null, "/", null, MS_REC | MS_PRIVATE);

    public static void Unmount(string target, int flags) =>
        JailSetupException.Check(Umount2Native(target, flags), $"umount2({target})");

    /// <summary>pivot_root(2) with the old root stacked under the new one (put_old "."), as pivot_root(".", ".") does.</summary>
    public static void PivotRoot(string newRoot, string putOld) =>
        JailSetupException.Check((int)PivotRootNative(SYS_pivot_root, newRoot, putOld), $"pivot_root({newRoot})");

    public static void ChangeDirectory(string path) => JailSetupException.Check(ChdirNative(path), $"chdir({path})");

    /// <summary>A character device node (mode 0600 plus <paramref name="permissions"/>), owned by uid:gid.</summary>
    public static void MakeCharDevice(string path, uint major, uint minor, uint permissions, uint uid, uint gid)
    {
        ulong dev = ((ulong)(major & 0xfff) << 8) | (minor & 0xff) | ((ulong)(minor & ~0xffu) << 12) | ((ulong)(major & ~0xfffu) << 32);
        JailSetupException.Check(MknodNative(path, S_IFCHR | permissions, dev), $"mknod({path})");
        JailSetupException.Check(LchownNative(path, uid, gid), $"chown({path})");
    }

    /// <summary>lchown(2): changes the owner of a path (not following a symbolic link).</summary>
    public static void ChangeOwner(string path, uint uid, uint gid) =>
        JailSetupException.Check(LchownNative(path, uid, gid), $"chown({path})");

    public static void SetHostname(string name)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(name);
        JailSetupException.Check(SetHostnameNative(bytes, bytes.Length), "sethostname");
    }
}
