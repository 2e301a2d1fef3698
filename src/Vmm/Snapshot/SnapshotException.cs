namespace FireSharp.Snapshot;

/// <summary>Why a snapshot could not be taken or restored.</summary>
public enum SnapshotErrorReason
{
    /// <summary>The target snapshot directory already exists (snapshots are never overwritten).</summary>
    DirectoryExists,
    /// <summary>The snapshot directory, its state file or its memory file does not exist (or its parent, when creating).</summary>
    NotFound,
    /// <summary>The state file is not a FireSharp snapshot, or its content does not parse.</summary>
    Corrupt,
    /// <summary>The state file is shorter than its header says.</summary>
    Truncated,
    /// <summary>The state file has a format version this build does not read.</summary>
    UnsupportedVersion,
    /// <summary>The state file's CRC-64 does not match its content.</summary>
    ChecksumMismatch,
    /// <summary>The memory file's size is not the snapshot's guest memory size.</summary>
    MemoryFileSizeMismatch,
    /// <summary>The snapshot's device set differs from the one requested (or one this build can create).</summary>
    DeviceSetMismatch,
    /// <summary>The VM is in a state that cannot be snapshotted (not running or paused) or could not be paused.</summary>
    InvalidVmState,
    /// <summary>The file system ran out of space while writing; nothing was left behind.</summary>
    DiskFull,
    /// <summary>Another I/O error while writing or reading the snapshot files.</summary>
    IoError,
    /// <summary>KVM refused saved state on restore (or could not read it on snapshot).</summary>
    KvmStateRejected,
    /// <summary>A diff snapshot's base is not the snapshot it was taken on (replaced, changed or damaged).</summary>
    BaseMismatch,
    /// <summary>
    /// The snapshot's HMAC (<see cref="SnapshotMac"/>) is missing, names a key this host does not have, or does
    /// not match its state file; or its memory file changed since. Nothing the snapshot names was opened.
    /// </summary>
    Unauthenticated,
}

/// <summary>A snapshot error with a machine-readable reason and a one-line message that names the file.</summary>
public sealed class SnapshotException(SnapshotErrorReason reason, string message, Exception? inner = null)
    : Exception(message, inner)
{
    public SnapshotErrorReason Reason { get; } = reason;
}
