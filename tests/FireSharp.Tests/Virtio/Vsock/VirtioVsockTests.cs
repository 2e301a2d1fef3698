using System.Net.Sockets;
using System.Text;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using static FireSharp.Devices.Virtio.Vsock.VsockProtocol;

namespace FireSharp.Tests.Virtio.Vsock;

public class VirtioVsockTests
{
    private static byte[] Bytes(int count, int seed)
    {
        var b = new byte[count];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void Config_space_holds_the_guest_cid_and_the_device_id_is_19()
    {
        using var rig = new VsockRig();
        Assert.Equal(19u, Mmio.R32(rig.Transport, VirtioMmioRegister.DeviceId));
        Assert.Equal((uint)VsockRig.Cid, Mmio.R32(rig.Transport, VirtioMmioRegister.Config));
        Assert.Equal(0u, Mmio.R32(rig.Transport, VirtioMmioRegister.Config + 4));
        Assert.True(File.Exists(rig.UdsPath), "the device creates its Unix socket");
    }

    [Fact]
    public void Host_connect_handshake_then_data_both_ways()
    {
        using var rig = new VsockRig();
        var (client, hostPort) = rig.OpenHostConnection(52);
        using (client)
        {
            Assert.True(hostPort >= 1024);
            Assert.Equal(1, rig.Device.ConnectionCount);

            var toGuest = Bytes(10_000, 1);
            client.Send(toGuest);
            var got = new List<byte>();
            foreach (var p in rig.ReadRx())
            {
                Assert.Equal(OpRw, p.Op);
                Assert.Equal(VsockProtocol.HostCid, p.Header.SrcCid);
                Assert.Equal(VsockRig.Cid, p.Header.DstCid);
                Assert.Equal(hostPort, p.Header.SrcPort);
                Assert.Equal(52u, p.Header.DstPort);
                Assert.Equal((uint)VirtioVsock.BufferSize, p.Header.BufAlloc);
                Assert.True(p.Payload.Length <= 4096);
                got.AddRange(p.Payload);
            }
            Assert.Equal(toGuest, got.ToArray());

            var toHost = Bytes(5000, 2);
            rig.Send(OpRw, 52, hostPort, toHost.AsSpan(..3000));
            rig.Send(OpRw, 52, hostPort, toHost.AsSpan(3000..), splitAt: VsockHeader.Size); // header and data in separate descriptors
            Assert.Equal(toHost, VsockRig.ReadExactly(client, toHost.Length));
            Assert.False(rig.Transport.NeedsReset);
        }
    }

    [Fact]
    public void Bytes_sent_after_the_connect_line_belong_to_the_stream()
    {
        using var rig = new VsockRig();
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 7\nearly"u8.ToArray());
        var req = Assert.Single(rig.ReadRx());
        Assert.Equal(OpRequest, req.Op);
        rig.Send(OpResponse, 7, req.Header.SrcPort);
        Assert.Equal($"OK {req.Header.SrcPort}", VsockRig.ReadLine(client));
        var rw = Assert.Single(rig.ReadRx());
        Assert.Equal(OpRw, rw.Op);
        Assert.Equal("early", Encoding.ASCII.GetString(rw.Payload));
    }

    [Fact]
    public void Guest_rst_to_a_host_connect_closes_the_client()
    {
        using var rig = new VsockRig();
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 99\n"u8.ToArray());
        var req = Assert.Single(rig.ReadRx());
        rig.Send(OpRst, 99, req.Header.SrcPort);
        Assert.True(VsockRig.IsClosed(client));
        Assert.Equal(0, rig.Device.ConnectionCount);
        Assert.Empty(rig.ReadRx()); // an RST is never answered
    }

    [Theory]
    [InlineData("HELLO\n")]
    [InlineData("CONNECT x\n")]
    [InlineData("CONNECT -1\n")]
    [InlineData("CONNECT 99999999999\n")]
    [InlineData("CONNECT 1234567890123456789012345678901234567890")]
    public void A_bad_connect_line_closes_the_client_and_tells_the_guest_nothing(string line)
    {
        using var rig = new VsockRig();
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send(Encoding.ASCII.GetBytes(line));
        Assert.Empty(rig.ReadRx());
        Assert.True(VsockRig.IsClosed(client));
        Assert.Equal(0, rig.Device.ConnectionCount);
    }

    [Fact]
    public void Guest_connect_to_a_listening_path_is_forwarded_both_ways()
    {
        using var rig = new VsockRig();
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        rig.Send(OpRequest, 1234, 53);
        var resp = Assert.Single(rig.ReadRx());
        Assert.Equal(OpResponse, resp.Op);
        Assert.Equal(53u, resp.Header.SrcPort);
        Assert.Equal(1234u, resp.Header.DstPort);
        using var host = listener.Accept();
        host.ReceiveTimeout = 5000;

        rig.Send(OpRw, 1234, 53, "ready"u8);
        Assert.Equal("ready", Encoding.ASCII.GetString(VsockRig.ReadExactly(host, 5)));
        host.Send("ack"u8.ToArray());
        var rw = Assert.Single(rig.ReadRx());
        Assert.Equal(OpRw, rw.Op);
        Assert.Equal("ack", Encoding.ASCII.GetString(rw.Payload));
    }

    [Fact]
    public void Guest_connect_with_nothing_listening_gets_rst()
    {
        using var rig = new VsockRig();
        rig.Send(OpRequest, 1234, 53);
        var rst = Assert.Single(rig.ReadRx());
        Assert.Equal(OpRst, rst.Op);
        Assert.Equal(53u, rst.Header.SrcPort);
        Assert.Equal(1234u, rst.Header.DstPort);
        Assert.Equal(0, rig.Device.ConnectionCount);
    }

    [Fact]
    public void Host_data_respects_the_guest_credit()
    {
        using var rig = new VsockRig();
        rig.GuestBufAlloc = 1000;
        var (client, hostPort) = rig.OpenHostConnection();
        using (client)
        {
            var data = Bytes(5000, 3);
            client.Send(data);
            var first = rig.ReadRx();
            int delivered = first.Where(p => p.Op == OpRw).Sum(p => p.Payload.Length);
            Assert.Equal(1000, delivered); // exactly the credit, not more
            Assert.Contains(first, p => p.Op == OpCreditRequest);

            // The guest consumed it: a credit update (fwd_cnt 1000) lets the next 1000 through.
            rig.Send(OpCreditUpdate, 52, hostPort);
            var second = rig.ReadRx();
            Assert.Equal(1000, second.Where(p => p.Op == OpRw).Sum(p => p.Payload.Length));
            var all = first.Concat(second).Where(p => p.Op == OpRw).SelectMany(p => p.Payload).ToArray();
            Assert.Equal(data[..2000], all);
        }
    }

    [Fact]
    public void Guest_sending_beyond_its_credit_gets_rst()
    {
        using var rig = new VsockRig();
        var (client, hostPort) = rig.OpenHostConnection();
        using (client)
        {
            // The host never reads: the socket fills, then our buffer (BufferSize), then the guest is out of credit.
            var chunk = Bytes(VirtioVsock.MaxPayload, 4);
            int sent = 0;
            List<RxPacket> rx = [];
            while (sent < 4 * 1024 * 1024 && !rx.Any(p => p.Op == OpRst))
            {
                rig.Send(OpRw, 52, hostPort, chunk);
                sent += chunk.Length;
                rx.AddRange(rig.ReadRx());
            }
            var rst = Assert.Single(rx, p => p.Op == OpRst);
            Assert.Equal(hostPort, rst.Header.SrcPort);
            Assert.True(sent > VirtioVsock.BufferSize, $"RST after only {sent} bytes");
            Assert.Equal(0, rig.Device.ConnectionCount);
            Assert.Contains(rig.Logger.Entries, e => e.Id.Id == 4201);
        }
    }

    [Fact]
    public void Host_tells_the_guest_about_freed_buffer_space()
    {
        using var rig = new VsockRig();
        var (client, hostPort) = rig.OpenHostConnection();
        using (client)
        {
            var chunk = Bytes(VirtioVsock.MaxPayload, 5);
            for (int i = 0; i < 2; i++) rig.Send(OpRw, 52, hostPort, chunk);
            VsockRig.ReadExactly(client, 2 * chunk.Length);
            // An update at least every quarter buffer: the last one covers everything forwarded.
            var update = rig.ReadRx().Last(p => p.Op == OpCreditUpdate);
            Assert.Equal((uint)(2 * chunk.Length), update.Header.FwdCnt);

            rig.Send(OpCreditRequest, 52, hostPort);
            var reply = Assert.Single(rig.ReadRx());
            Assert.Equal(OpCreditUpdate, reply.Op);
            Assert.Equal((uint)VirtioVsock.BufferSize, reply.Header.BufAlloc);
        }
    }

    [Fact]
    public void Connection_flood_is_bounded()
    {
        using var rig = new VsockRig(maxConnections: 8);
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        for (uint p = 0; p < 20; p++) rig.Send(OpRequest, 2000 + p, 53);
        var rx = rig.ReadRx();
        Assert.Equal(8, rx.Count(p => p.Op == OpResponse));
        Assert.Equal(12, rx.Count(p => p.Op == OpRst));
        Assert.Equal(8, rig.Device.ConnectionCount);

        // Host clients beyond the limit are closed at once.
        using var extra = VsockRig.ConnectClient(rig.UdsPath);
        rig.Pump();
        Assert.True(VsockRig.IsClosed(extra));
        Assert.Equal(8, rig.Device.ConnectionCount);
    }

    [Fact]
    public void Connection_flood_logs_refusals_rate_limited()
    {
        using var rig = new VsockRig(maxConnections: 2);
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        for (uint p = 0; p < 50; p++) rig.Send(OpRequest, 2000 + p, 53);
        var rx = rig.ReadRx();
        for (int round = 0; round < 10 && rx.Count < 50; round++) rx.AddRange(rig.ReadRx());
        Assert.Equal(48, rx.Count(p => p.Op == OpRst));
        Assert.Equal(48, rig.Device.ConnectionsRefused);
        // 48 refusals within the throttle's interval: one warning, not 48.
        Assert.Single(rig.Logger.Entries, e => e.Message.Contains("connection refused", StringComparison.Ordinal));
    }

    [Fact]
    public void Buffer_budget_shrinks_windows_as_it_fills()
    {
        // Four connections at most, and room for one full window (256 + 16 KiB), one of 8 + 8 KiB, and the smallest (4 + 4 KiB) for two.
        const int full = VirtioVsock.BufferSize + VirtioVsock.StagingSize;
        using var rig = new VsockRig(maxConnections: 4, bufferBudget: full + 4 * 8192);
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        for (uint p = 0; p < 6; p++) rig.Send(OpRequest, 2000 + p, 53);
        var rx = rig.ReadRx();
        var windows = rx.Where(p => p.Op == OpResponse).Select(p => p.Header.BufAlloc).ToList();
        Assert.Equal([(uint)VirtioVsock.BufferSize, 8192u, 4096u, 4096u], windows);
        Assert.Equal(2, rx.Count(p => p.Op == OpRst));
        Assert.Equal(full + 4 * 8192, rig.Device.BufferBytesReserved);

        // A guest that sends beyond the smaller window it was given is cut off, like one beyond the full window.
        var small = rx.Last(p => p.Op == OpResponse);
        rig.Send(OpRw, small.Header.DstPort, 53, new byte[8192]);
        Assert.Contains(rig.ReadRx(), p => p.Op == OpRst && p.Header.DstPort == small.Header.DstPort);

        // Closing connections gives their buffers back: a new connection gets a full window again.
        foreach (var r in rx.Where(p => p.Op == OpResponse)) rig.Send(OpRst, r.Header.DstPort, 53);
        rig.Pump();
        Assert.Equal(0, rig.Device.BufferBytesReserved);
        rig.Send(OpRequest, 3000, 53);
        Assert.Equal((uint)VirtioVsock.BufferSize, Assert.Single(rig.ReadRx(), p => p.Op == OpResponse).Header.BufAlloc);
    }

    [Fact]
    public void A_budget_too_small_for_the_connection_limit_is_refused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new VsockRig(maxConnections: 1024, bufferBudget: 1 << 20));

    [Fact]
    public void Default_budget_bounds_a_full_flood()
    {
        using var rig = new VsockRig(rxBuffers: 64);
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        int accepted = 0;
        for (uint p = 0; p < VirtioVsock.DefaultMaxConnections; p += 32)
        {
            for (uint i = p; i < p + 32; i++) rig.Send(OpRequest, 10_000 + i, 53);
            accepted += rig.ReadRx().Count(x => x.Op == OpResponse);
        }
        // Every connection the guest may open fits (at a smaller window), and together they stay within 32 MiB.
        Assert.Equal(VirtioVsock.DefaultMaxConnections, accepted);
        Assert.InRange(rig.Device.BufferBytesReserved, VirtioVsock.DefaultBufferBudget / 2, VirtioVsock.DefaultBufferBudget);
    }

    [Fact]
    public void Replies_wait_for_rx_buffers_instead_of_piling_up()
    {
        using var rig = new VsockRig(rxBuffers: 0);
        // 300 RW packets to unknown connections: each deserves an RST, but there is nowhere to put them.
        for (int i = 0; i < 300; i++) rig.Send(OpRw, 3000 + (uint)i, 9, "x"u8);
        rig.AddRxBuffers(60);
        var rx = rig.ReadRx();
        int total = rx.Count;
        for (int round = 0; round < 10 && total < 300; round++) total += rig.ReadRx().Count;
        Assert.Equal(300, total); // every packet answered once the guest gave buffers: none lost, none extra
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void Garbage_packets_are_dropped_or_answered_with_rst_and_the_device_survives()
    {
        using var rig = new VsockRig();
        rig.SendRaw(new byte[10]);                                  // shorter than a header: dropped
        Assert.Empty(rig.ReadRx());
        rig.Send(OpRw, 1, 2, "abc"u8, len: 100);                    // len beyond the buffer
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpRw, 1, 2, default, len: uint.MaxValue);          // absurd len
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(99, 1, 2);                                         // unknown op
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpRequest, 1, 2, type: 2);                         // seqpacket was not negotiated
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpRequest, 1, 2, dstCid: 77);                      // not to the host
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpRw, 1, 2, "abc"u8);                              // no such connection
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpResponse, 1, 2);                                 // nobody asked
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op);
        rig.Send(OpRst, 1, 2);                                      // RST is never answered
        rig.Send(OpRequest, 1, 2, srcCid: 3);                       // spoofed source: dropped
        rig.Send(OpRequest, 1, 2, "payload"u8, len: 7);             // REQUEST with a payload
        var last = rig.ReadRx();
        Assert.Equal(OpRst, Assert.Single(last).Op);
        Assert.Equal(0, rig.Device.ConnectionCount);
        Assert.False(rig.Transport.NeedsReset);

        // Still works.
        var (client, _) = rig.OpenHostConnection();
        client.Dispose();
    }

    [Fact]
    public void Guest_half_close_then_full_close()
    {
        using var rig = new VsockRig();
        var (client, hostPort) = rig.OpenHostConnection();
        using (client)
        {
            rig.Send(OpRw, 52, hostPort, "bye"u8);
            rig.Send(OpShutdown, 52, hostPort, flags: ShutdownSend);
            Assert.Equal("bye", Encoding.ASCII.GetString(VsockRig.ReadExactly(client, 3)));
            Assert.Equal(0, client.Receive(new byte[8])); // EOF: the guest sends no more

            client.Send("still here"u8.ToArray());         // the other direction still works
            var rw = Assert.Single(rig.ReadRx());
            Assert.Equal("still here", Encoding.ASCII.GetString(rw.Payload));

            rig.Send(OpShutdown, 52, hostPort, flags: ShutdownSend | ShutdownRcv);
            Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op); // completes the close
            Assert.Equal(0, rig.Device.ConnectionCount);
        }
    }

    [Fact]
    public void Host_half_close_reaches_the_guest_as_shutdown_send_after_the_data()
    {
        using var rig = new VsockRig();
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        rig.Send(OpRequest, 1234, 53);
        Assert.Equal(OpResponse, Assert.Single(rig.ReadRx()).Op);
        using var host = listener.Accept();
        host.ReceiveTimeout = 5000;
        host.Send("last words"u8.ToArray());
        host.Shutdown(SocketShutdown.Send);
        var rx = rig.ReadRx();
        Assert.Equal([OpRw, OpShutdown], rx.Select(p => p.Op));
        Assert.Equal(ShutdownSend, rx[1].Header.Flags);

        rig.Send(OpRw, 1234, 53, "reply"u8);            // the guest can still send
        Assert.Equal("reply", Encoding.ASCII.GetString(VsockRig.ReadExactly(host, 5)));

        host.Dispose();                                 // now the host is gone entirely
        var end = rig.ReadRx();
        var shutdown = Assert.Single(end);
        Assert.Equal(OpShutdown, shutdown.Op);
        Assert.Equal(ShutdownRcv | ShutdownSend, shutdown.Header.Flags);
        Assert.Equal(0, rig.Device.ConnectionCount);
    }

    [Fact]
    public void Host_client_closing_ends_the_connection_after_its_data()
    {
        using var rig = new VsockRig();
        var (client, _) = rig.OpenHostConnection();
        client.Send("x"u8.ToArray());
        client.Dispose();
        var rx = rig.ReadRx();
        Assert.Equal(OpRw, rx[0].Op);
        Assert.Equal(OpShutdown, rx[^1].Op);
        Assert.Equal(ShutdownRcv | ShutdownSend, rx[^1].Header.Flags);
        Assert.Equal(0, rig.Device.ConnectionCount);
    }

    [Fact]
    public void Transport_reset_event_drops_every_connection()
    {
        using var rig = new VsockRig();
        var (client, _) = rig.OpenHostConnection();
        using (client)
        {
            rig.Device.SendTransportReset();
            Assert.Equal([EventTransportReset], rig.ReadEvents());
            Assert.True(VsockRig.IsClosed(client));
            Assert.Equal(0, rig.Device.ConnectionCount);
        }
    }

    [Fact]
    public void Driver_reset_drops_every_connection()
    {
        using var rig = new VsockRig();
        var (client, _) = rig.OpenHostConnection();
        using (client)
        {
            Mmio.W32(rig.Transport, VirtioMmioRegister.Status, 0);
            rig.Pump();
            Assert.True(VsockRig.IsClosed(client));
            Assert.Equal(0, rig.Device.ConnectionCount);
        }
    }

    [Fact]
    public void State_round_trips_and_a_restore_sends_a_transport_reset()
    {
        using var rig = new VsockRig();
        var state = rig.Device.SaveState();
        rig.Device.RestoreState(state);
        Assert.Equal([EventTransportReset], rig.ReadEvents());
        state[1] ^= 1;
        Assert.Throws<InvalidDataException>(() => rig.Device.RestoreState(state));
    }

    [Fact]
    public void Runs_on_its_own_thread_with_epoll()
    {
        using var rig = new VsockRig();
        rig.Device.Start();
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 5\n"u8.ToArray());
        // The loop thread does the work; the test only waits for the REQUEST to show up in the used ring.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (rig.Memory.Read<ushort>(0x10000 + 0x2000 + 2) == 0 && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.NotEqual(0, rig.Memory.Read<ushort>(0x10000 + 0x2000 + 2));
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(1UL)]
    [InlineData(2UL)]
    [InlineData(0xFFFF_FFFFUL)]
    [InlineData(0x1_0000_0003UL)]
    public void Reserved_cids_are_refused(ulong cid)
    {
        var e = Assert.Throws<VirtioConfigException>(() => new VsockDeviceSpec(cid, "/tmp/fs-unused.sock").Validate());
        Assert.Equal(VirtioConfigError.InvalidVsockCid, e.Reason);
    }

    [Fact]
    public void An_existing_or_too_long_path_is_refused()
    {
        string existing = Path.GetTempFileName();
        try
        {
            var e = Assert.Throws<VirtioConfigException>(() => new VirtioVsock(new VsockDeviceSpec(3, existing)));
            Assert.Equal(VirtioConfigError.InvalidVsockPath, e.Reason);
            Assert.Contains("already exists", e.Message);
        }
        finally
        {
            File.Delete(existing);
        }
        var tooLong = "/tmp/" + new string('a', 110);
        var e2 = Assert.Throws<VirtioConfigException>(() => new VirtioVsock(new VsockDeviceSpec(3, tooLong)));
        Assert.Equal(VirtioConfigError.InvalidVsockPath, e2.Reason);
        Assert.Contains("107", e2.Message);
    }

    [Fact]
    public void A_host_connect_the_guest_never_answers_is_closed_after_the_timeout()
    {
        using var rig = new VsockRig(connectTimeout: TimeSpan.FromMilliseconds(50));
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 52\n"u8.ToArray());
        Assert.Equal(OpRequest, Assert.Single(rig.ReadRx()).Op);
        // epoll_wait returns by itself at the deadline: no event is needed to notice it.
        for (int i = 0; i < 100 && rig.Device.ConnectionCount > 0; i++) rig.Device.RunOnce(1000);
        Assert.Equal(0, rig.Device.ConnectionCount);
        Assert.Equal(OpRst, Assert.Single(rig.ReadRx()).Op); // the guest forgets the half-open connection
        Assert.True(VsockRig.IsClosed(client));
    }

    [Fact]
    public void A_quiesced_device_leaves_guest_memory_alone_until_unquiesced()
    {
        using var rig = new VsockRig();
        rig.Transport.Quiesce();
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 52\n"u8.ToArray());
        Assert.Empty(rig.ReadRx());
        rig.Transport.Unquiesce();
        Assert.Equal(OpRequest, Assert.Single(rig.ReadRx()).Op);
    }

    [Fact]
    public void Small_rx_buffers_split_host_data_and_too_small_ones_are_skipped()
    {
        using var rig = new VsockRig(rxBufBytes: VsockHeader.Size + 100);
        var (client, _) = rig.OpenHostConnection();
        using (client)
        {
            var data = Bytes(1000, 9);
            client.Send(data);
            var got = new List<byte>();
            for (int round = 0; round < 20 && got.Count < data.Length; round++)
                foreach (var p in rig.ReadRx().Where(p => p.Op == OpRw))
                {
                    Assert.True(p.Payload.Length <= 100);
                    got.AddRange(p.Payload);
                }
            Assert.Equal(data, got.ToArray());
        }
    }

    [Fact]
    public void An_rx_buffer_too_small_for_a_header_is_given_back_empty_and_the_packet_waits()
    {
        using var rig = new VsockRig(rxBuffers: 0);
        using var client = VsockRig.ConnectClient(rig.UdsPath);
        client.Send("CONNECT 52\n"u8.ToArray());
        rig.AddRxBuffers(3, bytes: 20);
        Assert.Equal([0u, 0u, 0u], rig.TakeRxLengths());
        rig.AddRxBuffers(1);
        Assert.Equal(OpRequest, Assert.Single(rig.ReadRx()).Op);
        Assert.False(rig.Transport.NeedsReset);
    }

    [Fact]
    public void Dispose_removes_the_socket_file()
    {
        var rig = new VsockRig();
        string path = rig.UdsPath;
        rig.Dispose();
        Assert.False(File.Exists(path));
    }
}

public class VirtioVsockFuzzTests
{
    /// <summary>Thousands of random packets (ops, lengths, ports, flags, CIDs, splits) never break the device.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_packets_never_break_the_device(int seed)
    {
        var rnd = new Random(seed);
        using var rig = new VsockRig(maxConnections: 16);
        using var listener = VsockRig.Listen(rig.UdsPath + "_53");
        for (int i = 0; i < 1500; i++)
        {
            int payloadLength = rnd.Next(4) == 0 ? rnd.Next(0, 5000) : rnd.Next(0, 64);
            var payload = new byte[payloadLength];
            rnd.NextBytes(payload);
            ushort op = (ushort)(rnd.Next(10) == 0 ? rnd.Next(0, 65536) : rnd.Next(0, 9));
            uint? len = rnd.Next(5) == 0 ? (uint)rnd.Next() : null;
            ushort type = (ushort)(rnd.Next(20) == 0 ? rnd.Next(0, 4) : VsockProtocol.TypeStream);
            ulong dst = rnd.Next(20) == 0 ? (ulong)rnd.Next(0, 5) : VsockProtocol.HostCid;
            ulong src = rnd.Next(30) == 0 ? (ulong)rnd.Next(0, 100) : VsockRig.Cid;
            uint guestPort = (uint)rnd.Next(1000, 1010), hostPort = rnd.Next(2) == 0 ? 53u : (uint)rnd.Next(50, 56);
            int split = rnd.Next(4) == 0 ? rnd.Next(1, VsockHeader.Size + payloadLength) : -1;
            if (rnd.Next(50) == 0)
            {
                var raw = new byte[rnd.Next(0, VsockHeader.Size)];
                rnd.NextBytes(raw);
                if (raw.Length > 0) rig.SendRaw(raw);
            }
            else
            {
                rig.Send(op, guestPort, hostPort, payload, flags: (uint)rnd.Next(0, 4), len: len, type: type, srcCid: src, dstCid: dst, splitAt: split);
            }
            foreach (var p in rig.ReadRx())
            {
                Assert.Equal(VsockProtocol.HostCid, p.Header.SrcCid);
                Assert.Equal(VsockRig.Cid, p.Header.DstCid);
                Assert.Equal(VsockProtocol.TypeStream, p.Header.Type);
                Assert.InRange(p.Op, VsockProtocol.OpRequest, VsockProtocol.OpCreditRequest);
            }
            while (listener.Poll(0, System.Net.Sockets.SelectMode.SelectRead)) listener.Accept().Dispose();
            Assert.InRange(rig.Device.ConnectionCount, 0, 16);
        }
        Assert.False(rig.Transport.NeedsReset);
        var (client, _) = rig.OpenHostConnection(); // and it still works
        client.Dispose();
    }
}
