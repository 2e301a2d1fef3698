using System.Text;
using FireSharp.Devices.Virtio.Vsock;
using static FireSharp.Devices.Virtio.Vsock.VsockProtocol;

namespace FireSharp.Tests.Virtio.Vsock;

/// <summary>An in-memory host stream: it takes <see cref="WriteRoom"/> more bytes, and has <see cref="Incoming"/> to read.</summary>
internal sealed class FakeHostStream : IVsockHostStream
{
    public List<byte> Written { get; } = [];
    public Queue<byte> Incoming { get; } = new();
    public int WriteRoom { get; set; } = int.MaxValue;
    public bool Eof { get; set; }
    public bool Broken { get; set; }
    public bool ShutWrite { get; private set; }
    public bool ShutRead { get; private set; }

    public VsockIo Write(ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        if (Broken) return VsockIo.Failed;
        if (WriteRoom == 0) return VsockIo.WouldBlock;
        written = Math.Min(WriteRoom, data.Length);
        Written.AddRange(data[..written]);
        WriteRoom -= written;
        return VsockIo.Done;
    }

    public VsockIo Read(Span<byte> buffer, out int read)
    {
        read = 0;
        if (Broken) return VsockIo.Failed;
        if (Incoming.Count == 0) return Eof ? VsockIo.Done : VsockIo.WouldBlock;
        while (read < buffer.Length && Incoming.TryDequeue(out byte b)) buffer[read++] = b;
        return VsockIo.Done;
    }

    public void ShutdownWrite() => ShutWrite = true;

    public void ShutdownRead() => ShutRead = true;

    public void Send(ReadOnlySpan<byte> data)
    {
        foreach (byte b in data) Incoming.Enqueue(b);
    }
}

/// <summary>The connection state machine on its own: no device, no sockets, no KVM.</summary>
public class VsockConnectionTests
{
    private const ulong Cid = 42;
    private const uint GuestPort = 52, HostPort = 1u << 30;

    private readonly FakeHostStream _host = new();

    /// <summary>A packet from the guest's port to the host's, with the guest's receive-buffer state.</summary>
    private static VsockHeader FromGuest(ushort op, uint len = 0, uint flags = 0, uint bufAlloc = 64 * 1024, uint fwdCnt = 0) =>
        new(Cid, HostCid, GuestPort, HostPort, len, TypeStream, op, flags, bufAlloc, fwdCnt);

    private VsockConnection GuestInitiated(uint bufAlloc = 64 * 1024)
    {
        var c = VsockConnection.GuestInitiated(_host, FromGuest(OpRequest, bufAlloc: bufAlloc));
        Assert.Equal(OpResponse, c.TakePacket(4096, out _).Op);
        Assert.False(c.HasPacketForGuest);
        return c;
    }

    private static void Data(VsockConnection c, int count, uint fwdCnt = 0) =>
        c.OnGuestPacket(FromGuest(OpRw, (uint)count, fwdCnt: fwdCnt), new byte[count]);

    private static List<VsockHeader> TakeAll(VsockConnection c, int room = 4096)
    {
        var packets = new List<VsockHeader>();
        while (c.HasPacketForGuest) packets.Add(c.TakePacket(room, out _));
        return packets;
    }

    [Fact]
    public void A_host_initiated_connection_sends_request_and_writes_its_greeting_when_the_guest_responds()
    {
        var c = VsockConnection.HostInitiated(_host, Cid, HostPort, GuestPort, "OK 1073741824\n"u8.ToArray());
        Assert.Equal(VsockConnState.HostConnecting, c.State);
        var request = c.TakePacket(4096, out var payload);
        Assert.Equal(new VsockHeader(HostCid, Cid, HostPort, GuestPort, 0, TypeStream, OpRequest, 0, VsockConnection.BufferSize, 0), request);
        Assert.True(payload.IsEmpty);
        Assert.False(c.WantsHostRead); // nothing is read from the host before the guest accepts

        c.OnGuestPacket(FromGuest(OpResponse), default);
        Assert.Equal(VsockConnState.Established, c.State);
        Assert.Equal("OK 1073741824\n", Encoding.ASCII.GetString(_host.Written.ToArray()));
        Assert.True(c.WantsHostRead);
    }

    [Fact]
    public void A_greeting_the_host_does_not_take_whole_kills_the_connection()
    {
        _host.WriteRoom = 3;
        var c = VsockConnection.HostInitiated(_host, Cid, HostPort, GuestPort, "OK 1073741824\n"u8.ToArray());
        c.TakePacket(4096, out _);
        c.OnGuestPacket(FromGuest(OpResponse), default);
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void Host_data_goes_to_the_guest_only_within_its_credit_then_credit_is_requested()
    {
        var c = GuestInitiated(bufAlloc: 1000);
        _host.Send(new byte[5000]);
        c.OnHostReadable();
        Assert.Equal(1000, c.StagedCount); // the credit, not the staging size
        Assert.False(c.WantsHostRead);     // staged data waits for rx buffers

        var first = c.TakePacket(600, out var p1);
        Assert.Equal((OpRw, 600u, 600), (first.Op, first.Len, p1.Length));
        var second = c.TakePacket(600, out var p2);
        Assert.Equal((OpRw, 400u, 400), (second.Op, second.Len, p2.Length));
        Assert.Equal(1000u, c.Credit.TxCnt);
        Assert.Equal(0u, c.Credit.PeerCredit);
        Assert.Equal(OpCreditRequest, Assert.Single(TakeAll(c)).Op);
        Assert.False(c.WantsHostRead);

        c.OnHostReadable(); // no credit: nothing read, but the guest is asked again
        Assert.Equal(4000, _host.Incoming.Count);
        Assert.Equal(OpCreditRequest, Assert.Single(TakeAll(c)).Op);

        c.OnGuestPacket(FromGuest(OpCreditUpdate, bufAlloc: 1000, fwdCnt: 700), default);
        Assert.Equal(700u, c.Credit.PeerCredit);
        Assert.True(c.WantsHostRead);
        c.OnHostReadable();
        Assert.Equal(700, c.StagedCount);
    }

    [Fact]
    public void A_peer_reporting_less_buffer_than_is_in_flight_has_no_credit()
    {
        var c = GuestInitiated(bufAlloc: 1000);
        _host.Send(new byte[800]);
        c.OnHostReadable();
        c.TakePacket(4096, out _);
        c.OnGuestPacket(FromGuest(OpCreditUpdate, bufAlloc: 500), default);
        Assert.Equal(0u, c.Credit.PeerCredit);
        Assert.False(c.WantsHostRead);
    }

    [Fact]
    public void Credit_survives_the_wrap_of_the_32_bit_counters()
    {
        var credit = new VsockCredit(1000);
        credit.Sent(int.MaxValue);
        credit.Sent(int.MaxValue);
        credit.Sent(2); // tx_cnt wrapped to 0
        Assert.Equal(0u, credit.TxCnt);
        credit.OnPeerHeader(new VsockHeader(Cid, HostCid, GuestPort, HostPort, 0, TypeStream, OpCreditUpdate, 0, 1000, uint.MaxValue - 99));
        Assert.Equal(900u, credit.PeerCredit); // 100 bytes still in flight across the wrap
    }

    [Fact]
    public void Forwarded_guest_data_is_counted_and_advertised_every_quarter_buffer()
    {
        var c = GuestInitiated();
        Data(c, 1000);
        Assert.Equal(1000u, c.Credit.FwdCnt);
        Assert.False(c.HasPacketForGuest); // not yet a quarter buffer

        Data(c, VsockConnection.BufferSize / 4 - 1000);
        var update = Assert.Single(TakeAll(c));
        Assert.Equal(OpCreditUpdate, update.Op);
        Assert.Equal((uint)(VsockConnection.BufferSize / 4), update.FwdCnt);
        Assert.Equal((uint)VsockConnection.BufferSize, update.BufAlloc);
        Assert.Equal(VsockConnection.BufferSize / 4, _host.Written.Count);

        c.OnGuestPacket(FromGuest(OpCreditRequest), default); // asked: answered even without progress
        Assert.Equal(OpCreditUpdate, Assert.Single(TakeAll(c)).Op);
    }

    [Fact]
    public void Guest_data_is_buffered_up_to_the_advertised_buffer_and_a_byte_more_kills_the_connection()
    {
        var c = GuestInitiated();
        _host.WriteRoom = 0; // the host reads nothing
        for (int i = 0; i < 4; i++) Data(c, VsockConnection.BufferSize / 4);
        Assert.Equal(VsockConnState.Established, c.State);
        Assert.Equal(VsockConnection.BufferSize, c.ToHostCount);
        Assert.True(c.WantsHostWrite);
        Assert.Null(c.Violation);

        Data(c, 1);
        Assert.Equal(VsockConnState.Killed, c.State);
        Assert.Contains("credit", c.Violation);
        Assert.Equal(0, c.ToHostCount);
        Assert.False(c.HasPacketForGuest);
    }

    [Fact]
    public void Buffered_guest_data_drains_in_order_when_the_host_takes_it()
    {
        var c = GuestInitiated();
        _host.WriteRoom = 2;
        c.OnGuestPacket(FromGuest(OpRw, 5), "hello"u8);
        Assert.Equal(3, c.ToHostCount);
        _host.WriteRoom = 1;
        c.OnHostWritable();
        _host.WriteRoom = int.MaxValue;
        c.OnGuestPacket(FromGuest(OpRw, 6), " world"u8); // queued behind the rest, never ahead of it
        c.OnHostWritable();
        Assert.Equal("hello world", Encoding.ASCII.GetString(_host.Written.ToArray()));
        Assert.Equal(11u, c.Credit.FwdCnt);
        Assert.False(c.WantsHostWrite);
    }

    [Fact]
    public void Guest_half_close_shuts_the_host_write_side_after_the_data_then_full_close_means_rst()
    {
        var c = GuestInitiated();
        _host.WriteRoom = 0;
        c.OnGuestPacket(FromGuest(OpRw, 3), "bye"u8);
        c.OnGuestPacket(FromGuest(OpShutdown, flags: ShutdownSend), default);
        Assert.False(_host.ShutWrite); // "bye" is still queued

        _host.WriteRoom = int.MaxValue;
        c.OnHostWritable();
        Assert.Equal("bye", Encoding.ASCII.GetString(_host.Written.ToArray()));
        Assert.True(_host.ShutWrite);

        _host.Send("still here"u8); // the other direction still works
        c.OnHostReadable();
        var rw = c.TakePacket(4096, out var payload);
        Assert.Equal(OpRw, rw.Op);
        Assert.Equal("still here", Encoding.ASCII.GetString(payload));

        c.OnGuestPacket(FromGuest(OpShutdown, flags: ShutdownSend | ShutdownRcv), default);
        Assert.Equal(VsockConnState.Killed, c.State); // RST completes the close
        Assert.Null(c.Violation);
    }

    [Fact]
    public void Guest_full_close_with_data_queued_ends_with_rst_once_the_data_is_written()
    {
        var c = GuestInitiated();
        _host.WriteRoom = 0;
        c.OnGuestPacket(FromGuest(OpRw, 4), "last"u8);
        c.OnGuestPacket(FromGuest(OpShutdown, flags: ShutdownSend | ShutdownRcv), default);
        Assert.Equal(VsockConnState.Established, c.State);
        Assert.True(c.CloseAfterFlush);

        _host.WriteRoom = int.MaxValue;
        c.OnHostWritable();
        Assert.Equal("last", Encoding.ASCII.GetString(_host.Written.ToArray()));
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void Data_after_the_guest_half_closed_kills_the_connection()
    {
        var c = GuestInitiated();
        c.OnGuestPacket(FromGuest(OpShutdown, flags: ShutdownSend), default);
        Assert.True(_host.ShutWrite);
        Data(c, 1);
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void Guest_shutdown_rcv_drops_staged_data_and_stops_reading_the_host()
    {
        var c = GuestInitiated();
        _host.Send(new byte[100]);
        c.OnHostReadable();
        c.OnGuestPacket(FromGuest(OpShutdown, flags: ShutdownRcv), default);
        Assert.Equal(0, c.StagedCount);
        Assert.True(_host.ShutRead);
        Assert.False(c.WantsHostRead);
        Assert.False(c.HasPacketForGuest);
    }

    [Fact]
    public void Host_end_of_stream_reaches_the_guest_after_the_data_and_a_later_hangup_closes_it()
    {
        var c = GuestInitiated();
        _host.Send("tail"u8);
        c.OnHostReadable();
        _host.Eof = true;
        Assert.Equal(OpRw, c.TakePacket(4096, out _).Op);
        c.OnHostReadable();
        Assert.True(c.HostEof);
        Assert.False(c.WantsHostRead);
        var shutdown = Assert.Single(TakeAll(c));
        Assert.Equal((OpShutdown, ShutdownSend), (shutdown.Op, shutdown.Flags));

        Data(c, 5); // the guest may still send
        Assert.Equal(5, _host.Written.Count);

        c.OnHostHangup();
        var end = c.TakePacket(4096, out _);
        Assert.Equal((OpShutdown, ShutdownRcv | ShutdownSend), (end.Op, end.Flags));
        Assert.Equal(VsockConnState.Closed, c.State); // SHUTDOWN both ways ends it without RST
    }

    [Fact]
    public void A_hangup_with_guest_data_undelivered_kills_the_connection()
    {
        var c = GuestInitiated();
        _host.WriteRoom = 0;
        Data(c, 10);
        c.OnHostHangup();
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void A_host_stream_error_kills_the_connection()
    {
        var c = GuestInitiated();
        _host.Broken = true;
        Data(c, 10);
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void Guest_rst_closes_without_an_rst_back()
    {
        var c = GuestInitiated();
        c.OnGuestPacket(FromGuest(OpRst), default);
        Assert.Equal(VsockConnState.Closed, c.State);
        Assert.True(c.IsOver);
    }

    [Theory]
    [InlineData(OpRw)]
    [InlineData(OpShutdown)]
    [InlineData(OpRequest)]
    public void Packets_the_handshake_does_not_allow_kill_a_host_initiated_connection(ushort op)
    {
        var c = VsockConnection.HostInitiated(_host, Cid, HostPort, GuestPort);
        c.TakePacket(4096, out _);
        c.OnGuestPacket(FromGuest(op, len: op == OpRw ? 1u : 0), op == OpRw ? "x"u8 : default);
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void A_second_response_or_request_on_an_established_connection_kills_it()
    {
        var c = GuestInitiated();
        c.OnGuestPacket(FromGuest(OpResponse), default);
        Assert.Equal(VsockConnState.Killed, c.State);
    }

    [Fact]
    public void Giving_up_a_host_connect_needs_rst_only_if_the_guest_saw_the_request()
    {
        var unseen = VsockConnection.HostInitiated(_host, Cid, HostPort, GuestPort);
        unseen.GiveUpConnecting();
        Assert.Equal(VsockConnState.Closed, unseen.State);

        var seen = VsockConnection.HostInitiated(_host, Cid, HostPort, GuestPort);
        seen.TakePacket(4096, out _);
        seen.GiveUpConnecting();
        Assert.Equal(VsockConnState.Killed, seen.State);
    }
}
