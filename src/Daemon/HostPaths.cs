using FireSharp.Daemon.Vms;
using FireSharp.Kvm.Files;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon;

/// <summary>
/// The daemon's use of <see cref="PathPolicy"/> (docs/security.md): every host path a client or a snapshot names is
/// opened under the configured roots (AllowedPathRoots) before anything uses it, and a refusal becomes a
/// <see cref="VmApiException"/> naming the field: PermissionDenied outside every root, InvalidArgument otherwise.
/// </summary>
public sealed class HostPaths(DaemonOptions options)
{
    private readonly PathPolicy _policy = options.PathPolicy();

    public PathPolicy Policy => _policy;

    /// <summary>Opens a file under the policy (a drive read-write when <paramref name="writable"/>); the caller owns the handle.</summary>
    public SafeFileHandle Open(string path, PathKind kind, string field, bool writable = false)
    {
        try
        {
            return _policy.Open(path, kind, writable);
        }
        catch (PathPolicyException e)
        {
            // A missing directory (a snapshot to restore) is NotFound, as the snapshot reader says; a missing file is a bad spec.
            throw ToApi(e, field, missingIsNotFound: kind == PathKind.Directory);
        }
    }

    /// <summary>Checks that <paramref name="path"/> opens under the policy as <paramref name="kind"/> (then closes it).</summary>
    public void Check(string path, PathKind kind, string field, bool writable = false)
    {
        using var _ = Open(path, kind, field, writable);
    }

    /// <summary>The kernel, initrd and drives of a spec. <paramref name="driveField"/> names drive i's path field.</summary>
    /// <paramref name="withKernel"/> false skips the kernel and initrd (a restore does not load them).
    public void CheckSpec(VmConfig spec, Func<int, string> driveField, bool withKernel = true)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(driveField);
        if (withKernel)
        {
            Check(spec.Kernel.Path, PathKind.File, "spec.kernel.path");
            if (spec.Kernel.InitrdPath is { Length: > 0 } initrd) Check(initrd, PathKind.File, "spec.kernel.initrd_path");
        }
        for (int i = 0; i < spec.Drives.Count; i++)
            Check(spec.Drives[i].Path, PathKind.Drive, driveField(i), writable: !spec.Drives[i].ReadOnly);
    }

    /// <summary>A path about to be created (a snapshot directory): its parent under a root, the name free.</summary>
    public void CheckCreatable(string path, string field)
    {
        try
        {
            using var _ = _policy.CheckCreatable(path);
        }
        catch (PathPolicyException e)
        {
            throw ToApi(e, field, missingIsNotFound: true);
        }
    }

    /// <summary>
    /// As <see cref="CheckCreatable"/>, keeping the parent: its O_PATH fd (opened beneath a root) and the name to create
    /// in it, for a caller that then creates relative to that fd (mkdirat, renameat), never by the path again.
    /// </summary>
    public SafeFileHandle OpenParentForCreate(string path, string field, out string name)
    {
        try
        {
            return _policy.CheckCreatable(path, out name);
        }
        catch (PathPolicyException e)
        {
            throw ToApi(e, field, missingIsNotFound: true);
        }
    }

    /// <summary>A socket path the daemon lets a worker create (a restore's vsock_path): new, and under the state directory.</summary>
    public void CheckSocket(string path, string field)
    {
        var stateOnly = new PathPolicy([options.StateDir], allowBlockDevices: false);
        try
        {
            using var _ = stateOnly.CheckCreatable(path);
        }
        catch (PathPolicyException e) when (e.Reason == PathRefusal.OutsideRoots)
        {
            throw new VmApiException(VmErrorKind.PermissionDenied, field, $"{path} is outside the state directory {options.StateDir} (a socket may only be created there)");
        }
        catch (PathPolicyException e)
        {
            throw ToApi(e, field);
        }
    }

    /// <summary>
    /// A refusal as the API's error: PermissionDenied outside every root, AlreadyExists for a taken name, NotFound for
    /// a missing one with <paramref name="missingIsNotFound"/>, InvalidArgument otherwise.
    /// </summary>
    public static VmApiException ToApi(PathPolicyException e, string field, bool missingIsNotFound = false)
    {
        ArgumentNullException.ThrowIfNull(e);
        var kind = e.Reason switch
        {
            PathRefusal.OutsideRoots => VmErrorKind.PermissionDenied,
            PathRefusal.Exists => VmErrorKind.AlreadyExists,
            PathRefusal.NotFound when missingIsNotFound => VmErrorKind.NotFound,
            _ => VmErrorKind.InvalidArgument,
        };
        return new VmApiException(kind, field, e.Message);
    }
}
