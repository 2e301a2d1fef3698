namespace FireSharp.Devices.Virtio;

/// <summary>Why a virtio device could not be configured.</summary>
public enum VirtioConfigError
{
    ImageNotFound,
    ImageUnreadable,
    ImageNotWritable,
    NotARegularFile,
    ImageSizeNotSectorMultiple,
    DuplicatePath,
    TooManyDevices,
    InvalidSerial,
    InvalidDriveSyntax,
    MultipleRootDrives,
    DuplicateId,
    InvalidVsockCid,
    InvalidVsockPath,
}

/// <summary>
/// A virtio device configuration the host rejects before the VM starts (a missing image, a path given
/// twice, too many devices, ...). <see cref="Field"/> names the offending input, e.g. "drive[1]".
/// </summary>
public sealed class VirtioConfigException(string field, VirtioConfigError reason, string message)
    : Exception($"{field}: {message}")
{
    public string Field { get; } = field;
    public VirtioConfigError Reason { get; } = reason;

    /// <summary>The message without the field prefix.</summary>
    public string Detail { get; } = message;
}
