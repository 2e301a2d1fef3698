using FireSharp.Kvm.Interop;

namespace FireSharp.Daemon.Auth;

/// <summary>
/// Who may use the Unix socket, judged on the kernel's record of the connecting process (SO_PEERCRED and
/// SO_PEERGROUPS): root, the daemon's own user, the configured users, and members (primary or supplementary)
/// of the configured groups and of SocketGroup. An allowed peer is <see cref="ApiRole.Admin"/>: the socket is the
/// local administration channel, and anyone allowed on it could already reach the state directory or be given
/// the group by root. (Finer local roles would be a uid-to-role map; not built.)
/// </summary>
public sealed class UnixPeerPolicy
{
    private readonly HashSet<uint> _uids;
    private readonly HashSet<uint> _gids;

    public UnixPeerPolicy(DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _uids = [0, ProcInfo.EffectiveUserId, .. options.SocketAllowedUids];
        _gids = [.. options.SocketAllowedGids];
        if (options.SocketGroup is { } group)
            _gids.Add((uint)(ProcInfo.GroupIdOf(group) ?? throw new ArgumentException($"configuration SocketGroup='{group}': no such group in /etc/group")));
    }

    public IReadOnlyCollection<uint> AllowedUids => _uids;

    public IReadOnlyCollection<uint> AllowedGids => _gids;

    /// <summary>The role of a peer; <see cref="ApiRole.None"/> when the kernel could not say who it is or it is not allowed.</summary>
    public ApiRole RoleOf(PeerCredentials? peer) =>
        peer is { } p && (_uids.Contains(p.Uid) || _gids.Any(p.InGroup)) ? ApiRole.Admin : ApiRole.None;

    /// <summary>How a peer is named in messages and logs.</summary>
    public static string Describe(PeerCredentials? peer) =>
        peer is { } p ? $"uid {p.Uid} gid {p.Gid} (pid {p.Pid})" : "a peer the kernel did not identify";
}
