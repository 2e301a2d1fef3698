namespace FireSharp.Devices;

/// <summary>What kind of problem a <see cref="DeviceConfigException"/> is, for callers that map it (the worker, a restore).</summary>
public enum DeviceConfigProblem
{
    /// <summary>The configuration itself is wrong (syntax, a duplicate, a limit).</summary>
    Invalid,

    /// <summary>A host resource it names does not exist (a drive image).</summary>
    NotFound,

    /// <summary>The host cannot provide it now (no /dev/net/tun, no permission).</summary>
    HostUnavailable,

    /// <summary>The host resource exists but cannot be read or written.</summary>
    HostIo,
}

/// <summary>
/// A device configuration the host rejects before the VM runs. <see cref="Field"/> names the offending input
/// the way the VMM does ("drive[1]", "net[0]", "vsock", "--drive"); <see cref="Detail"/> is the message without it.
/// Each device family has its own subclass with its own reason enum.
/// </summary>
public abstract class DeviceConfigException(string field, string detail, Exception? inner = null)
    : Exception($"{field}: {detail}", inner)
{
    public string Field { get; } = field;

    /// <summary>The message without the leading field name.</summary>
    public string Detail { get; } = detail;

    public abstract DeviceConfigProblem Problem { get; }
}

/// <summary>Why a snapshot's device could not be rebuilt (<see cref="DeviceRestoreException"/>).</summary>
public enum DeviceRestoreProblem
{
    /// <summary>The snapshot's record of the device does not parse.</summary>
    Corrupt,

    /// <summary>A host resource the snapshot names is gone (a drive image).</summary>
    NotFound,

    /// <summary>The device cannot be rebuilt as recorded (another size, a path in use, an override for a device it does not have).</summary>
    Mismatch,
}

/// <summary>A device of a snapshot that this host cannot rebuild as recorded; a restore maps it to its own error.</summary>
public sealed class DeviceRestoreException(DeviceRestoreProblem problem, string message, Exception? inner = null) : Exception(message, inner)
{
    public DeviceRestoreProblem Problem { get; } = problem;
}
