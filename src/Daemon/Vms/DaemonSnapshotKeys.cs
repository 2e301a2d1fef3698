using FireSharp.Snapshot;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// The daemon's snapshot key ring, <see cref="DaemonOptions.SnapshotKeysDir"/>: created with a first key at the daemon's
/// first start, read again at each use, so a key added by hand (a rotation) signs the next snapshot without a restart,
/// and the older keys keep verifying the snapshots they signed.
/// </summary>
internal sealed class DaemonSnapshotKeys(DaemonOptions options)
{
    public SnapshotKeys Current => options.SnapshotKeysPath is { } path ? SnapshotKeys.FromPath(path) : SnapshotKeys.OpenOrCreate(options.SnapshotKeysDir);
}
