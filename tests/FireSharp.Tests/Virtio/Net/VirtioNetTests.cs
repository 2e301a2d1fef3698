using System.Buffers.Binary;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;

namespace FireSharp.Tests.Virtio.Net;

public class VirtioNetTests
{
    private const ulong Base = VirtioFeatures.Transport | NetProtocol.Mac | NetProtocol.Status;

    [Fact]
    public void Device_id_is_1_and_config_holds_the_mac_and_link_up()
    {
        using var rig = new NetRig();
        Assert.Equal(1u, Mmio.R32(rig.Transport, VirtioMmioRegister.DeviceId));
        // Byte by byte, as Linux reads the MAC.
        var config = new byte[8];
        for (int i = 0; i < 8; i++) rig.Transport.Read(VirtioMmioRegister.Config + (ulong)i, config.AsSpan(i, 1));
        Assert.Equal(NetRig.DefaultMac, config[..6]);
        Assert.Equal(NetProtocol.StatusLinkUp, BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(6)));
    }

    [Fact]
    public void Offloads_are_offered_only_when_the_backend_has_them()
    {
        using (var plain = new NetRig(NetOffloads.None))
        {
            Assert.Equal(NetProtocol.Mac | NetProtocol.Status, plain.Device.DeviceFeatures);
        }
        using var full = new NetRig(NetOffloads.All);
        ulong f = full.Device.DeviceFeatures;
        foreach (var bit in new[] { NetProtocol.Csum, NetProtocol.GuestCsum, NetProtocol.HostTso4, NetProtocol.HostTso6, NetProtocol.GuestTso4, NetProtocol.GuestTso6 })
            Assert.NotEqual(0UL, f & bit);
        Assert.Equal(0UL, f & NetProtocol.MrgRxbuf);
        // The guest accepted all of them: the backend may now hand it partial checksums and TSO frames.
        Assert.Equal(NetOffloads.All, full.Backend.ReceiveOffloads);
    }

    [Fact]
    public void Receive_offloads_follow_what_the_guest_negotiated()
    {
        using var rig = new NetRig(NetOffloads.All, Base | NetProtocol.Csum | NetProtocol.HostTso4);
        Assert.Equal(NetOffloads.None, rig.Backend.ReceiveOffloads); // no GUEST_CSUM: full checksums, no TSO
        rig.Bringup(Base | NetProtocol.GuestCsum | NetProtocol.GuestTso6);
        Assert.Equal(NetOffloads.Csum | NetOffloads.Tso6, rig.Backend.ReceiveOffloads);
    }

    [Fact]
    public void Frames_round_trip_both_ways_with_their_headers()
    {
        using var rig = new NetRig(NetOffloads.All);
        rig.AddRxBuffers(4, pieces: 3);
        var toGuest = NetRig.Frame(1500, 1, flags: NetProtocol.HeaderFlagNeedsCsum, csumStart: 34, csumOffset: 16);
        rig.Inject(toGuest);
        var got = Assert.Single(rig.TakeRx());
        Assert.Equal(toGuest.Length, got.Length);
        Assert.Equal(NetProtocol.HeaderFlagNeedsCsum, got[0]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(got.AsSpan(NetProtocol.NumBuffersOffset))); // num_buffers
        Assert.Equal(toGuest[..10], got[..10]);
        Assert.Equal(toGuest[NetProtocol.HeaderSize..], got[NetProtocol.HeaderSize..]);

        // A 64 KiB TSO frame from the guest, gathered from 5 descriptors.
        var fromGuest = NetRig.Frame(65000, 2, flags: NetProtocol.HeaderFlagNeedsCsum, gso: NetProtocol.GsoTcpV4, csumStart: 34, csumOffset: 16);
        var (_, len) = rig.Transmit(fromGuest, pieces: 5);
        Assert.Equal(0u, len);
        Assert.Equal(fromGuest, rig.ReceiveFromGuest());
        var c = rig.Device.Counters;
        Assert.Equal((1L, 1500L, 0L, 1L, 65000L, 0L), c);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void Without_guest_csum_the_header_flags_reach_the_guest_cleared()
    {
        using var rig = new NetRig(NetOffloads.All, Base);
        rig.AddRxBuffers(1, 2048);
        rig.Inject(NetRig.Frame(100, 3, flags: NetProtocol.HeaderFlagDataValid));
        var got = Assert.Single(rig.TakeRx());
        Assert.Equal(0, got[0]);
    }

    [Fact]
    public void With_no_receive_buffers_one_frame_waits_and_the_backend_is_no_longer_read()
    {
        using var rig = new NetRig();
        for (int i = 0; i < 5; i++) rig.Peer.Send(NetRig.Frame(200, 10 + i));
        rig.Pump(); // returns: nothing blocks without buffers
        Assert.Empty(rig.TakeRx());
        Assert.True(rig.Device.HasPendingFrame);
        Assert.False(rig.Device.WatchingBackend);
        // Exactly one frame left the socket; the other four are still queued in the kernel.
        Assert.True(rig.Peer.Connected);

        rig.AddRxBuffers(2, 2048);
        var first = rig.TakeRx();
        Assert.Equal(2, first.Count);
        Assert.Equal(NetRig.Frame(200, 10)[NetProtocol.HeaderSize..], first[0][NetProtocol.HeaderSize..]);
        Assert.Equal(NetRig.Frame(200, 11)[NetProtocol.HeaderSize..], first[1][NetProtocol.HeaderSize..]);
        Assert.True(rig.Device.HasPendingFrame);

        rig.AddRxBuffers(8, 2048);
        var rest = rig.TakeRx();
        Assert.Equal(3, rest.Count);
        Assert.Equal(NetRig.Frame(200, 14)[NetProtocol.HeaderSize..], rest[2][NetProtocol.HeaderSize..]);
        Assert.False(rig.Device.HasPendingFrame);
        Assert.True(rig.Device.WatchingBackend);
    }

    [Fact]
    public void A_frame_larger_than_the_receive_chain_is_dropped_and_the_next_one_delivered()
    {
        using var rig = new NetRig();
        rig.AddRxBuffers(2, 1000);
        rig.Inject(NetRig.Frame(3000, 1));
        rig.Inject(NetRig.Frame(500, 2));
        var got = rig.TakeRx();
        Assert.Equal(2, got.Count);
        Assert.Empty(got[0]); // the chain came back unused
        Assert.Equal(NetRig.Frame(500, 2)[NetProtocol.HeaderSize..], got[1][NetProtocol.HeaderSize..]);
        Assert.Equal(1, rig.Device.Counters.RxDropped);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void A_receive_chain_with_readable_buffers_is_returned_unused_and_the_frame_kept()
    {
        using var rig = new NetRig();
        rig.SetDesc(0, 0, NetRig.RxData, 2048, 0, 0); // device-readable: wrong for rx
        rig.Publish(0, 0);
        rig.SetDesc(0, 1, NetRig.RxData + NetRig.Slot, 2048, Virtqueue.DescFlagWrite, 0);
        rig.Publish(0, 1);
        Mmio.Notify(rig.Transport, 0);
        rig.Inject(NetRig.Frame(300, 5));
        var used = rig.TakeUsed(0);
        Assert.Equal([(0, 0u), (1, (uint)(NetProtocol.HeaderSize + 300))], used);
        var delivered = new byte[300];
        rig.Memory.Read(NetRig.RxData + NetRig.Slot + NetProtocol.HeaderSize, delivered);
        Assert.Equal(NetRig.Frame(300, 5)[NetProtocol.HeaderSize..], delivered);
    }

    [Theory]
    [InlineData("writable")]
    [InlineData("short")]
    [InlineData("long")]
    [InlineData("csum-not-negotiated")]
    [InlineData("tso-not-negotiated")]
    [InlineData("ufo")]
    public void Malformed_transmit_chains_are_returned_and_nothing_is_sent(string kind)
    {
        using var rig = new NetRig(NetOffloads.None, Base);
        switch (kind)
        {
            case "writable":
                rig.SetDesc(1, 0, NetRig.TxData, 100, Virtqueue.DescFlagNext, 1);
                rig.SetDesc(1, 1, NetRig.TxData + 100, 100, Virtqueue.DescFlagWrite, 0);
                rig.Publish(1, 0);
                Mmio.Notify(rig.Transport, 1);
                rig.Pump();
                Assert.Equal([(0, 0u)], rig.TakeUsed(1));
                break;
            case "short":
                rig.Transmit(new byte[NetProtocol.MinFrameSize - 1]);
                break;
            case "long":
                rig.SetDesc(1, 0, NetRig.TxData, NetProtocol.MaxFrameSize, Virtqueue.DescFlagNext, 1);
                rig.SetDesc(1, 1, NetRig.TxData + NetRig.Slot, 1, 0, 0);
                rig.Publish(1, 0);
                Mmio.Notify(rig.Transport, 1);
                rig.Pump();
                Assert.Equal([(0, 0u)], rig.TakeUsed(1));
                break;
            case "csum-not-negotiated":
                rig.Transmit(NetRig.Frame(100, 1, flags: NetProtocol.HeaderFlagNeedsCsum));
                break;
            case "tso-not-negotiated":
                rig.Transmit(NetRig.Frame(100, 1, gso: NetProtocol.GsoTcpV4));
                break;
            case "ufo":
                rig.Transmit(NetRig.Frame(100, 1, gso: NetProtocol.GsoUdp));
                break;
        }
        Assert.Null(rig.ReceiveFromGuest());
        Assert.Equal(1, rig.Device.Counters.TxDropped);
        Assert.Contains(rig.Logger.Entries, e => e.Id.Id == 4301);
        Assert.False(rig.Transport.NeedsReset);
        // The device still works.
        var ok = NetRig.Frame(60, 9);
        rig.Transmit(ok);
        Assert.Equal(ok, rig.ReceiveFromGuest());
    }

    [Fact]
    public void A_descriptor_loop_breaks_the_queue_not_the_device_thread()
    {
        using var rig = new NetRig();
        rig.SetDesc(1, 0, NetRig.TxData, 100, Virtqueue.DescFlagNext, 1);
        rig.SetDesc(1, 1, NetRig.TxData, 100, Virtqueue.DescFlagNext, 0);
        rig.Publish(1, 0);
        Mmio.Notify(rig.Transport, 1);
        rig.Pump();
        Assert.True(rig.Transport.NeedsReset);
        Assert.Null(rig.ReceiveFromGuest());
        // A reset and a new bring-up recover it (the guest fixed its table; the device starts from the ring's first entry again).
        rig.SetDesc(1, 0, NetRig.TxData, 100, 0, 0);
        rig.Bringup(Base);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void Out_of_range_buffers_break_the_queue_and_nothing_is_read_or_written()
    {
        using var rig = new NetRig();
        rig.SetDesc(0, 0, NetRig.MemoryBytes - 100, 2048, Virtqueue.DescFlagWrite, 0);
        rig.Publish(0, 0);
        Mmio.Notify(rig.Transport, 0);
        rig.Inject(NetRig.Frame(300, 1));
        Assert.True(rig.Transport.NeedsReset);
        Assert.Empty(rig.TakeUsed(0));
    }

    [Fact]
    public void Snapshot_state_carries_the_mac_and_refuses_another()
    {
        using var a = new NetRig(NetOffloads.All);
        a.AddRxBuffers(3, 2048);
        var state = a.Transport.SaveState();
        using var b = new NetRig(NetOffloads.All, bringup: false);
        b.Transport.RestoreState(state);
        Assert.Equal(a.Transport.DriverFeatures, b.Transport.DriverFeatures);
        Assert.Equal(NetOffloads.All, b.Backend.ReceiveOffloads); // Activate ran with the restored features
        // The restored queues hold the guest's three receive buffers: a frame goes straight in.
        a.Memory.Read(0, b.Memory.GetSpan(0, (int)NetRig.RxData));
        b.Pump();
        b.Inject(NetRig.Frame(100, 4));
        Assert.Equal(1, b.Device.Counters.RxFrames);

        var other = new VirtioNet("other", SocketPairBackend.Create(NetOffloads.All).Backend, [2, 0, 0, 0, 0, 9]);
        using var mem = FireSharp.Memory.GuestMemory.CreateAnonymous(1 << 20);
        var t = new VirtioMmioTransport(other, mem, new Tests.Devices.FakeInterruptLine());
        var e = Assert.Throws<InvalidDataException>(() => t.RestoreState(state));
        Assert.Contains("MAC", e.Message);
        other.Dispose();
    }

    [Fact]
    public void Quiesced_device_reads_nothing_and_catches_up_when_unquiesced()
    {
        using var rig = new NetRig();
        rig.AddRxBuffers(2, 2048);
        rig.Transport.Quiesce();
        rig.Inject(NetRig.Frame(100, 1));
        rig.Pump();
        Assert.Empty(rig.TakeUsed(0));
        Assert.False(rig.Device.WatchingBackend); // not spinning on a readable socket
        rig.Transport.Unquiesce();
        Assert.Single(rig.TakeRx());
    }

    [Fact]
    public void Driver_reset_drops_the_waiting_frame()
    {
        using var rig = new NetRig();
        rig.Inject(NetRig.Frame(100, 1));
        Assert.True(rig.Device.HasPendingFrame);
        Mmio.W32(rig.Transport, VirtioMmioRegister.Status, 0);
        rig.Pump();
        Assert.False(rig.Device.HasPendingFrame);
        Assert.Equal(1, rig.Device.Counters.RxDropped);
    }
}
