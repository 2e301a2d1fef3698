using FireSharp.Proto.Worker;

namespace FireSharp.Daemon.Jail;

/// <summary>Which uid/gid a new jailed VM gets: the configured fixed pair, or the lowest uid of the range that no existing VM holds (gid = uid).</summary>
public static class JailIds
{
    /// <summary>The identity for a new VM, or null when every uid of the range is taken.</summary>
    public static JailIdentity? Allocate(DaemonOptions options, IReadOnlySet<uint> taken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(taken);
        if (options.JailUid is uint fixedUid) return new JailIdentity { Uid = fixedUid, Gid = options.JailGid ?? fixedUid };
        for (ulong uid = options.JailUidBase; uid < (ulong)options.JailUidBase + options.JailUidCount; uid++)
            if (!taken.Contains((uint)uid)) return new JailIdentity { Uid = (uint)uid, Gid = (uint)uid };
        return null;
    }
}
