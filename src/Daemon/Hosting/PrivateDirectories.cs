using FireSharp.Kvm.Interop;

namespace FireSharp.Daemon.Hosting;

/// <summary>
/// The daemon's directories and how its Unix socket appears, so that neither is ever open to others, whatever
/// the umask. The state directory is created 0700. The socket's directory (the runtime directory) is created
/// 0700, or 0750 and given to SocketGroup when there is one, or 0711 when other users are allowed by uid (they
/// must be able to reach the socket). Existing directories are left as they are (the socket may live in a shared
/// directory such as /run). Kestrel binds the socket inside a fresh 0700 staging directory beside its final path
/// (<see cref="BindPath"/>); once the server listens, <see cref="PublishSocket"/> sets its mode and group there
/// and renames it into place. So the socket is reachable by others only once its final mode is set.
/// </summary>
public sealed class PrivateDirectories(DaemonOptions options)
{
    private const UnixFileMode Owner = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>The staging directory: beside the socket (a rename cannot cross file systems), named after it.</summary>
    public string StagingDir { get; } = Path.Combine(Path.GetDirectoryName(options.Socket)!, "." + Path.GetFileName(options.Socket) + ".bind");

    /// <summary>Where Kestrel binds the socket.</summary>
    public string BindPath => Path.Combine(StagingDir, "s");

    /// <summary>The listening socket systemd passed (<see cref="SocketActivation"/>): nothing is bound, staged or published then.</summary>
    public int? ActivatedFd { get; init; }

    /// <summary>The runtime directory's mode when the daemon creates it.</summary>
    public UnixFileMode RuntimeDirMode =>
        options.SocketGroup is not null ? Owner | UnixFileMode.GroupRead | UnixFileMode.GroupExecute
        : options.SocketAllowedUids.Count > 0 ? Owner | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute
        : Owner;

    /// <summary>Creates the state and runtime directories if missing, and a fresh staging directory.</summary>
    public void Prepare()
    {
        CreateIfMissing(options.StateDir, Owner, group: null);
        if (ActivatedFd is not null) return;
        CreateIfMissing(Path.GetDirectoryName(options.Socket)!, RuntimeDirMode, options.SocketGroup);
        if (!FileSystem.TryCreateDirectory(StagingDir, Owner))
        {
            // Left by a daemon that crashed before publishing (or planted: Directory.Delete removes a symlink, not its target).
            Directory.Delete(StagingDir, recursive: true);
            if (!FileSystem.TryCreateDirectory(StagingDir, Owner))
                throw new IOException($"{StagingDir} keeps reappearing: another process is racing the daemon for its socket");
        }
    }

    /// <summary>Sets the bound socket's mode and group, then renames it to its final path and removes the staging directory.</summary>
    public void PublishSocket()
    {
        if (ActivatedFd is not null) return;
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(BindPath, options.SocketMode);
        if (options.SocketGroup is { } group) ProcInfo.ChangeGroup(BindPath, group);
        File.Move(BindPath, options.Socket, overwrite: true);
        Directory.Delete(StagingDir);
    }

    /// <summary>Removes the staging directory if it is still there (a start that failed before publishing).</summary>
    public void Cleanup()
    {
        if (ActivatedFd is not null) return;
        try { Directory.Delete(StagingDir, recursive: true); }
        catch (DirectoryNotFoundException) { }
        catch (IOException) { }
    }

    private static void CreateIfMissing(string path, UnixFileMode mode, string? group)
    {
        if (Directory.Exists(path)) return;
        if (Path.GetDirectoryName(path) is { } parent) Directory.CreateDirectory(parent);
        if (FileSystem.TryCreateDirectory(path, mode) && group is not null) ProcInfo.ChangeGroup(path, group);
    }
}
