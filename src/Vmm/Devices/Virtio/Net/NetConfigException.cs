namespace FireSharp.Devices.Virtio.Net;

/// <summary>Why a network interface could not be set up.</summary>
public enum NetConfigError
{
    /// <summary>/dev/net/tun does not exist (no tun driver, or not in this mount namespace).</summary>
    TunUnavailable,

    /// <summary>Not allowed to open /dev/net/tun or to create/attach the tap (needs CAP_NET_ADMIN, or the tap's owner).</summary>
    PermissionDenied,

    /// <summary>A tap name that Linux cannot take (empty, longer than 15 bytes, '/', whitespace, ...).</summary>
    InvalidTapName,

    /// <summary>The tap is attached to another process (one queue per tap).</summary>
    TapBusy,

    /// <summary>The name belongs to a device that is not a tap (a tun, a bridge, ...), or the kernel refused the settings.</summary>
    TapUnusable,

    /// <summary>A MAC address that does not parse, is multicast or is all zeros.</summary>
    InvalidMac,

    /// <summary>A guest IPv4 setting that does not parse.</summary>
    InvalidIp,

    /// <summary>Two interfaces with one id or one tap, or an id that is not usable.</summary>
    InvalidId,
}

/// <summary>A network interface the host cannot provide; <see cref="DeviceConfigException.Field"/> names the input (e.g. "--net", "net[0]").</summary>
public sealed class NetConfigException(string field, NetConfigError reason, string message) : DeviceConfigException(field, message)
{
    public NetConfigError Reason { get; } = reason;

    public override DeviceConfigProblem Problem =>
        Reason is NetConfigError.TunUnavailable or NetConfigError.PermissionDenied ? DeviceConfigProblem.HostUnavailable : DeviceConfigProblem.Invalid;
}
