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
/// twice, too many devices, ...). <see cref="DeviceConfigException.Field"/> names the offending input, e.g. "drive[1]".
/// </summary>
public sealed class VirtioConfigException(string field, VirtioConfigError reason, string message)
    : DeviceConfigException(field, message)
{
    public VirtioConfigError Reason { get; } = reason;

    public override DeviceConfigProblem Problem => Reason switch
    {
        VirtioConfigError.ImageNotFound => DeviceConfigProblem.NotFound,
        VirtioConfigError.ImageUnreadable or VirtioConfigError.ImageNotWritable => DeviceConfigProblem.HostIo,
        _ => DeviceConfigProblem.Invalid,
    };
}
