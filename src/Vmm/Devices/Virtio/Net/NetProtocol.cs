namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// The virtio network device's numbers (virtio 1.x, "Network Device", device id 1): feature bits, the
/// config-space layout, the per-packet header and its flags.
/// </summary>
public static class NetProtocol
{
    public const int RxQueue = 0, TxQueue = 1;

    // Feature bits.
    public const int CsumBit = 0, GuestCsumBit = 1, MtuBit = 3, MacBit = 5, GuestTso4Bit = 7, GuestTso6Bit = 8,
        GuestUfoBit = 10, HostTso4Bit = 11, HostTso6Bit = 12, HostUfoBit = 14, MrgRxbufBit = 15, StatusBit = 16;

    public const ulong Csum = 1UL << CsumBit, GuestCsum = 1UL << GuestCsumBit, Mac = 1UL << MacBit,
        GuestTso4 = 1UL << GuestTso4Bit, GuestTso6 = 1UL << GuestTso6Bit, HostTso4 = 1UL << HostTso4Bit,
        HostTso6 = 1UL << HostTso6Bit, MrgRxbuf = 1UL << MrgRxbufBit, Status = 1UL << StatusBit;

    /// <summary>Config space: mac[6] at 0, status (le16) at 6.</summary>
    public const int ConfigMacOffset = 0, ConfigStatusOffset = 6, ConfigSize = 8;

    /// <summary>VIRTIO_NET_S_LINK_UP in the config status field.</summary>
    public const ushort StatusLinkUp = 1;

    /// <summary>
    /// struct virtio_net_hdr as it is with VIRTIO_F_VERSION_1: flags, gso_type, hdr_len, gso_size, csum_start,
    /// csum_offset and num_buffers (the last field is always present in 1.x, with or without MRG_RXBUF).
    /// </summary>
    public const int HeaderSize = 12;

    /// <summary>Offset of num_buffers (le16) in the header.</summary>
    public const int NumBuffersOffset = 10;

    public const byte HeaderFlagNeedsCsum = 1, HeaderFlagDataValid = 2;
    public const byte GsoNone = 0, GsoTcpV4 = 1, GsoUdp = 3, GsoTcpV6 = 4, GsoEcn = 0x80;

    /// <summary>
    /// Largest frame the device moves, header included: 12 bytes of header, a 64 KiB GSO packet and an Ethernet
    /// header with a VLAN tag (65562, as Firecracker). A tx chain with more readable bytes is dropped.
    /// </summary>
    public const int MaxFrameSize = 65562;

    /// <summary>Smallest sensible frame: the header and an Ethernet header.</summary>
    public const int MinFrameSize = HeaderSize + 14;
}

/// <summary>Offloads a backend accepts and produces in its virtio-net headers (the tap's TUN_F_* set).</summary>
[Flags]
public enum NetOffloads
{
    None = 0,

    /// <summary>Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM): TUN_F_CSUM.</summary>
    Csum = 1,

    /// <summary>TCP segmentation over IPv4 (needs <see cref="Csum"/>): TUN_F_TSO4.</summary>
    Tso4 = 2,

    /// <summary>TCP segmentation over IPv6 (needs <see cref="Csum"/>): TUN_F_TSO6.</summary>
    Tso6 = 4,

    All = Csum | Tso4 | Tso6,
}
