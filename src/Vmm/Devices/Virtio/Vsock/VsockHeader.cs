using System.Buffers.Binary;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>virtio-vsock protocol numbers (virtio 1.x, "Socket Device").</summary>
public static class VsockProtocol
{
    /// <summary>The host's CID (VMADDR_CID_HOST); CIDs 0..2 are reserved, so a guest has 3 or more.</summary>
    public const ulong HostCid = 2;

    public const ushort TypeStream = 1;

    public const ushort OpInvalid = 0, OpRequest = 1, OpResponse = 2, OpRst = 3, OpShutdown = 4, OpRw = 5,
        OpCreditUpdate = 6, OpCreditRequest = 7;

    /// <summary>SHUTDOWN flags: the sender will receive (RCV) / send (SEND) no more data.</summary>
    public const uint ShutdownRcv = 1, ShutdownSend = 2;

    /// <summary>The only event: all connections are gone (e.g. after a snapshot restore).</summary>
    public const uint EventTransportReset = 0;

    /// <summary>VIRTIO_VSOCK_F_STREAM (virtio 1.2); a driver that does not accept it still gets streams.</summary>
    public const int FeatureStream = 0;

    public const int RxQueue = 0, TxQueue = 1, EventQueue = 2;
}

/// <summary>
/// struct virtio_vsock_hdr: 44 bytes, packed, little-endian: src_cid (u64), dst_cid (u64), src_port,
/// dst_port, len (u32), type, op (u16), flags, buf_alloc, fwd_cnt (u32).
/// </summary>
public record struct VsockHeader(ulong SrcCid, ulong DstCid, uint SrcPort, uint DstPort, uint Len, ushort Type, ushort Op,
    uint Flags, uint BufAlloc, uint FwdCnt)
{
    public const int Size = 44;

    public static VsockHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(b),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[20..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[24..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[28..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[30..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[32..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[36..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[40..]));

    public readonly void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b, SrcCid);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], DstCid);
        BinaryPrimitives.WriteUInt32LittleEndian(b[16..], SrcPort);
        BinaryPrimitives.WriteUInt32LittleEndian(b[20..], DstPort);
        BinaryPrimitives.WriteUInt32LittleEndian(b[24..], Len);
        BinaryPrimitives.WriteUInt16LittleEndian(b[28..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(b[30..], Op);
        BinaryPrimitives.WriteUInt32LittleEndian(b[32..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[36..], BufAlloc);
        BinaryPrimitives.WriteUInt32LittleEndian(b[40..], FwdCnt);
    }

    public static string OpName(ushort op) => op switch
    {
        VsockProtocol.OpRequest => "REQUEST",
        VsockProtocol.OpResponse => "RESPONSE",
        VsockProtocol.OpRst => "RST",
        VsockProtocol.OpShutdown => "SHUTDOWN",
        VsockProtocol.OpRw => "RW",
        VsockProtocol.OpCreditUpdate => "CREDIT_UPDATE",
        VsockProtocol.OpCreditRequest => "CREDIT_REQUEST",
        _ => $"op {op}",
    };
}
