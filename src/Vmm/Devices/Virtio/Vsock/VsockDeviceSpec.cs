using System.Text;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// A VM's vsock device: the guest's CID and the host Unix socket (Firecracker's hybrid vsock) that FireSharp
/// creates at <see cref="UdsPath"/>. Guest connections to host port P go to <c>UdsPath_P</c>.
/// </summary>
public sealed record VsockDeviceSpec(ulong GuestCid, string UdsPath) : IDeviceConfig
{
    public string Kind => VsockDeviceKind.Name;

    /// <summary>The longest Unix socket path (sun_path is 108 bytes including the NUL).</summary>
    public const int MaxUnixPathBytes = 107;

    /// <summary>Where a guest connection to host (CID 2) port <paramref name="port"/> is forwarded.</summary>
    public static string GuestInitiatedPath(string udsPath, uint port) => $"{udsPath}_{port}";

    /// <summary>Throws <see cref="VirtioConfigException"/> for a reserved CID, or a socket path that is empty, too long or taken.</summary>
    public void Validate(string field = "vsock")
    {
        // 0, 1 and 2 are the hypervisor, local and host; the upper 32 bits are reserved and -1U is VMADDR_CID_ANY.
        if (GuestCid < 3 || GuestCid >= 0xFFFF_FFFF)
            throw new VirtioConfigException(field, VirtioConfigError.InvalidVsockCid,
                $"guest CID {GuestCid} is reserved: a guest CID is 3..4294967294");
        if (string.IsNullOrEmpty(UdsPath))
            throw new VirtioConfigException(field, VirtioConfigError.InvalidVsockPath, "the vsock Unix socket path is empty");
        if (Encoding.UTF8.GetByteCount(UdsPath) > MaxUnixPathBytes)
            throw new VirtioConfigException(field, VirtioConfigError.InvalidVsockPath,
                $"vsock Unix socket path {UdsPath} is {Encoding.UTF8.GetByteCount(UdsPath)} bytes; a Unix socket path is at most {MaxUnixPathBytes}");
        if (File.Exists(UdsPath) || Directory.Exists(UdsPath) || new FileInfo(UdsPath).LinkTarget is not null)
            throw new VirtioConfigException(field, VirtioConfigError.InvalidVsockPath,
                $"vsock Unix socket path {UdsPath} already exists (FireSharp creates it; remove a stale one first)");
        string? dir = Path.GetDirectoryName(Path.GetFullPath(UdsPath));
        if (dir is not null && !Directory.Exists(dir))
            throw new VirtioConfigException(field, VirtioConfigError.InvalidVsockPath, $"directory {dir} of vsock socket {UdsPath} does not exist");
    }
}
