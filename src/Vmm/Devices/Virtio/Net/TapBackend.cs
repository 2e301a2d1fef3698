using System.Buffers.Binary;
using System.Text;

using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// A Linux tap device opened through /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: every frame read or
/// written starts with a 12-byte virtio-net header (TUNSETVNETHDRSZ), so guest checksum and segmentation
/// offloads pass through untouched. The descriptor is non-blocking and close-on-exec.
/// <para>
/// <see cref="Open"/> attaches to the named tap, or creates it when no device has that name; with no name the
/// kernel picks a free <c>fstapN</c>. A tap this backend created is not persistent, so it disappears when the
/// descriptor closes (<see cref="Dispose"/>, or the process ends). A persistent tap (<c>ip tuntap add</c>) stays.
/// </para>
/// </summary>
public sealed class TapBackend : FdNetBackend
{
    public const string TunPath = "/dev/net/tun";

    /// <summary>What the kernel turns into the first free fstap0, fstap1, ... for an automatic tap.</summary>
    public const string AutoNamePattern = "fstap%d";

    /// <summary>IFNAMSIZ - 1.</summary>
    public const int MaxNameBytes = 15;

    private NetOffloads _receive;

    private TapBackend(int fd, string name, bool created, NetOffloads supported) : base(fd)
    {
        Name = name;
        Created = created;
        SupportedOffloads = supported;
    }

    /// <summary>The interface name (the kernel's choice for an automatic tap).</summary>
    public override string Name { get; }

    /// <summary>True when no device of that name existed (for a tap handed over by the jailer: when it is not persistent): it goes with this backend.</summary>
    public bool Created { get; }

    public override NetOffloads SupportedOffloads { get; }

    /// <summary>TUNSETOFFLOAD with what the guest can receive. A refusal leaves the previous set (none at first).</summary>
    public override void SetReceiveOffloads(NetOffloads offloads)
    {
        offloads &= SupportedOffloads;
        if ((offloads & NetOffloads.Csum) == 0) offloads = NetOffloads.None; // TSO without checksum offload is not a thing
        if (offloads == _receive) return;
        if (NetInterop.IoctlValue(Fd, NetInterop.TUNSETOFFLOAD, ToTunFlags(offloads)) < 0)
            throw Errno.LastIOError($"{Name}: TUNSETOFFLOAD");
        _receive = offloads;
    }

    public static uint ToTunFlags(NetOffloads o) =>
        ((o & NetOffloads.Csum) != 0 ? NetInterop.TUN_F_CSUM : 0)
        | ((o & NetOffloads.Tso4) != 0 ? NetInterop.TUN_F_TSO4 : 0)
        | ((o & NetOffloads.Tso6) != 0 ? NetInterop.TUN_F_TSO6 : 0);

    /// <summary>Throws <see cref="NetConfigException"/> (<see cref="NetConfigError.InvalidTapName"/>) for a name Linux cannot take.</summary>
    public static void ValidateName(string name, string field = "tap")
    {
        if (string.IsNullOrEmpty(name))
            throw new NetConfigException(field, NetConfigError.InvalidTapName, "the tap name is empty");
        int bytes = Encoding.UTF8.GetByteCount(name);
        if (bytes > MaxNameBytes)
            throw new NetConfigException(field, NetConfigError.InvalidTapName, $"tap name '{name}' is {bytes} bytes; Linux allows at most {MaxNameBytes}");
        if (name is "." or "..")
            throw new NetConfigException(field, NetConfigError.InvalidTapName, $"'{name}' is not a device name");
        foreach (char c in name)
        {
            if (c is '/' or ':' or '%' || char.IsWhiteSpace(c) || char.IsControl(c) || c > '~')
                throw new NetConfigException(field, NetConfigError.InvalidTapName, $"tap name '{name}' contains '{c}', which a tap name cannot");
        }
    }

    /// <summary>
    /// Opens (or creates) tap <paramref name="name"/>, or a new automatic tap when it is null. A jailed worker takes
    /// the tap its jailer opened for that name instead (<see cref="PreopenedTaps"/>): /dev/net/tun is not in its
    /// root, and its uid could not attach. Throws <see cref="NetConfigException"/>: tun missing, no permission
    /// (CAP_NET_ADMIN), a bad or busy name, a device that is not a tap.
    /// </summary>
    public static TapBackend Open(string? name, string field = "tap")
    {
        if (name is not null) ValidateName(name, field);
        if (PreopenedTaps.Take(name, field) is { } given) return Adopt(given, field);
        bool existed = name is not null && Directory.Exists("/sys/class/net/" + name);
        int fd = Attach(name, field, existed, out string actual);
        try
        {
            return Configure(fd, actual, created: !existed, field);
        }
        catch
        {
            Descriptors.Close(fd);
            throw;
        }
    }

    /// <summary>
    /// The jailer's half of <see cref="Open"/> (as root, in the VM's network namespace, which the tap then belongs
    /// to): attaches to or creates the tap and returns its descriptor, for the jailed worker's <see cref="Adopt"/>.
    /// </summary>
    public static SafeFileHandle OpenForJail(string? name, string field = "tap")
    {
        if (name is not null) ValidateName(name, field);
        return new SafeFileHandle(Attach(name, field, existed: false, out _), ownsHandle: true);
    }

    /// <summary>
    /// A tap whose descriptor this process was handed already attached (<see cref="OpenForJail"/>): its name (the
    /// kernel's choice for an automatic tap) comes from TUNGETIFF; it goes with the descriptor unless persistent.
    /// Takes ownership of <paramref name="handle"/>.
    /// </summary>
    public static TapBackend Adopt(SafeFileHandle handle, string field = "tap")
    {
        ArgumentNullException.ThrowIfNull(handle);
        int fd = (int)handle.DangerousGetHandle();
        handle.SetHandleAsInvalid(); // the backend owns the fd from here
        try
        {
            Span<byte> ifr = stackalloc byte[NetInterop.IfReqSize];
            ifr.Clear();
            if (NetInterop.IoctlBuffer(fd, NetInterop.TUNGETIFF, ifr) < 0)
                throw new NetConfigException(field, NetConfigError.TapUnusable, $"the tap handed over: TUNGETIFF: {Errno.Text(Errno.Last)}");
            bool persistent = (BinaryPrimitives.ReadInt16LittleEndian(ifr[NetInterop.IfReqFlagsOffset..]) & NetInterop.IFF_PERSIST) != 0;
            return Configure(fd, NameIn(ifr), created: !persistent, field);
        }
        catch
        {
            Descriptors.Close(fd);
            throw;
        }
    }

    /// <summary>Opens /dev/net/tun and TUNSETIFF: the tap's descriptor (non-blocking, close-on-exec) and its real name.</summary>
    private static int Attach(string? name, string field, bool existed, out string actual)
    {
        int fd = Descriptors.Open(TunPath, NetInterop.O_RDWR | NetInterop.O_NONBLOCK | NetInterop.O_CLOEXEC);
        if (fd < 0)
        {
            int err = Errno.Last;
            throw err switch
            {
                NetInterop.ENOENT or NetInterop.ENODEV or NetInterop.ENXIO => new NetConfigException(field, NetConfigError.TunUnavailable,
                    $"{TunPath} is missing ({Errno.Text(err)}): load the tun module (modprobe tun) or give the process the device"),
                NetInterop.EACCES or NetInterop.EPERM => new NetConfigException(field, NetConfigError.PermissionDenied,
                    $"cannot open {TunPath}: {Errno.Text(err)}"),
                _ => new NetConfigException(field, NetConfigError.TunUnavailable, $"cannot open {TunPath}: {Errno.Text(err)}"),
            };
        }
        Span<byte> ifr = stackalloc byte[NetInterop.IfReqSize];
        ifr.Clear();
        Encoding.UTF8.GetBytes(name ?? AutoNamePattern, ifr[..(NetInterop.IfNameSize - 1)]);
        BinaryPrimitives.WriteInt16LittleEndian(ifr[NetInterop.IfReqFlagsOffset..], NetInterop.IFF_TAP | NetInterop.IFF_NO_PI | NetInterop.IFF_VNET_HDR);
        if (NetInterop.IoctlBuffer(fd, NetInterop.TUNSETIFF, ifr) < 0)
        {
            int err = Errno.Last;
            Descriptors.Close(fd);
            string what = name is null ? "create a tap device" : existed ? $"attach to tap '{name}'" : $"create tap '{name}'";
            throw err switch
            {
                NetInterop.EPERM or NetInterop.EACCES => new NetConfigException(field, NetConfigError.PermissionDenied,
                    $"not allowed to {what} ({Errno.Text(err)}): needs CAP_NET_ADMIN, or a persistent tap owned by this user"),
                NetInterop.EBUSY => new NetConfigException(field, NetConfigError.TapBusy,
                    $"tap '{name}' is in use by another process ({Errno.Text(err)})"),
                NetInterop.EINVAL => new NetConfigException(field, NetConfigError.TapUnusable,
                    $"cannot {what}: {Errno.Text(err)} (is '{name}' another kind of device, e.g. a tun or a multi-queue tap?)"),
                _ => new NetConfigException(field, NetConfigError.TapUnusable, $"cannot {what}: {Errno.Text(err)}"),
            };
        }
        actual = NameIn(ifr);
        return fd;
    }

    /// <summary>The interface name in an ifreq (NUL-terminated within IFNAMSIZ).</summary>
    private static string NameIn(ReadOnlySpan<byte> ifr)
    {
        int len = ifr[..NetInterop.IfNameSize].IndexOf((byte)0);
        return Encoding.UTF8.GetString(ifr[..(len < 0 ? NetInterop.IfNameSize : len)]);
    }

    /// <summary>TUNSETVNETHDRSZ and the offload probe on an attached tap (neither needs a privilege); on failure the caller closes <paramref name="fd"/>.</summary>
    private static TapBackend Configure(int fd, string actual, bool created, string field)
    {
        Span<byte> size = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(size, NetProtocol.HeaderSize);
        if (NetInterop.IoctlBuffer(fd, NetInterop.TUNSETVNETHDRSZ, size) < 0)
            throw new NetConfigException(field, NetConfigError.TapUnusable,
                $"tap '{actual}': TUNSETVNETHDRSZ {NetProtocol.HeaderSize}: {Errno.Text(Errno.Last)}");

        // Which offloads this kernel's tap takes: ask for all, then less; leave none set until a guest asks.
        NetOffloads supported = NetOffloads.None;
        foreach (var candidate in new[] { NetOffloads.All, NetOffloads.Csum })
        {
            if (NetInterop.IoctlValue(fd, NetInterop.TUNSETOFFLOAD, ToTunFlags(candidate)) == 0)
            {
                supported = candidate;
                break;
            }
        }
        NetInterop.IoctlValue(fd, NetInterop.TUNSETOFFLOAD, 0);
        return new TapBackend(fd, actual, created, supported);
    }
}
