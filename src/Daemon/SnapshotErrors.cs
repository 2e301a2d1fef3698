using FireSharp.Snapshot;

namespace FireSharp.Daemon;

/// <summary>
/// How snapshot failures appear in the API: each <see cref="SnapshotErrorReason"/> becomes one
/// <see cref="VmErrorKind"/> (and so one gRPC status, through <see cref="ErrorInterceptor"/>) and names
/// the request field at fault. Used by the interceptor for failures in the daemon and by the worker for
/// failures it sends back over its socket.
/// </summary>
public static class SnapshotErrors
{
    /// <summary>The API error for a snapshot failure; <paramref name="dirField"/> is the request's directory field.</summary>
    public static VmApiException ToApi(SnapshotException e, string dirField = "dir") => e.Reason switch
    {
        SnapshotErrorReason.DirectoryExists => new VmApiException(VmErrorKind.AlreadyExists, dirField, e.Message),
        SnapshotErrorReason.NotFound => new VmApiException(VmErrorKind.NotFound, dirField, e.Message),
        SnapshotErrorReason.Corrupt or SnapshotErrorReason.Truncated or SnapshotErrorReason.UnsupportedVersion
            or SnapshotErrorReason.ChecksumMismatch or SnapshotErrorReason.MemoryFileSizeMismatch
            or SnapshotErrorReason.DeviceSetMismatch or SnapshotErrorReason.KvmStateRejected or SnapshotErrorReason.BaseMismatch
            or SnapshotErrorReason.Unauthenticated
            => new VmApiException(VmErrorKind.InvalidArgument, dirField, e.Message),
        SnapshotErrorReason.InvalidVmState => new VmApiException(VmErrorKind.WrongState, null, e.Message),
        SnapshotErrorReason.DiskFull => new VmApiException(VmErrorKind.ResourceExhausted, dirField, e.Message),
        _ => new VmApiException(VmErrorKind.Unavailable, null, e.Message), // IoError: the host failed us
    };
}
