namespace FireSharp.Daemon;

/// <summary>Why an API call failed. <see cref="ErrorInterceptor"/> maps each to one gRPC status code.</summary>
public enum VmErrorKind
{
    /// <summary>A malformed request; <see cref="VmApiException.Field"/> names the field (InvalidArgument).</summary>
    InvalidArgument,
    /// <summary>No VM has that id (NotFound).</summary>
    NotFound,
    /// <summary>CreateVm with an id that is taken (AlreadyExists).</summary>
    AlreadyExists,
    /// <summary>The VM is in the wrong state, or a prerequisite such as the guest agent is missing (FailedPrecondition).</summary>
    WrongState,
    /// <summary>A daemon limit or the host's memory or vCPUs would be exceeded (ResourceExhausted).</summary>
    ResourceExhausted,
    /// <summary>A well-formed request for a feature that does not exist yet (Unimplemented).</summary>
    Unimplemented,
    /// <summary>The VM's worker is gone or not answering, or KVM failed (Unavailable).</summary>
    Unavailable,
    /// <summary>An operation did not finish within its time (DeadlineExceeded).</summary>
    Timeout,
    /// <summary>A host path outside every allowed root (PermissionDenied; docs/security.md).</summary>
    PermissionDenied,
}

/// <summary>
/// The one exception type of the API layer: a kind, the request field at fault (as a proto path such as
/// <c>spec.machine.mem_mib</c>, or null) and a message. The message seen by clients is
/// <c>"field: message"</c> when a field is named.
/// </summary>
public sealed class VmApiException(VmErrorKind kind, string? field, string message)
    : Exception(field is null ? message : $"{field}: {message}")
{
    public VmErrorKind Kind { get; } = kind;
    public string? Field { get; } = field;

    /// <summary>The message without the field prefix.</summary>
    public string Detail { get; } = message;

    public static VmApiException Invalid(string field, string message) => new(VmErrorKind.InvalidArgument, field, message);
    public static VmApiException NotFound(string id) => new(VmErrorKind.NotFound, "id", $"no VM with id '{id}'");
    public static VmApiException WrongState(string message) => new(VmErrorKind.WrongState, null, message);
    public static VmApiException Exhausted(string? field, string message) => new(VmErrorKind.ResourceExhausted, field, message);
    public static VmApiException Unimplemented(string field, string message) => new(VmErrorKind.Unimplemented, field, message);
    public static VmApiException Unavailable(string message) => new(VmErrorKind.Unavailable, null, message);
}
