namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// What <see cref="VirtioVsock"/> (the virtio device: queues, config, reset, state) asks of the host side of vsock
/// (<see cref="VsockMuxer"/>): it hands over every packet the guest sends, takes the packets owed to the guest while
/// there are rx buffers, passes on the epoll events of descriptors the host side registered, and drops everything
/// on a reset. All calls come from the device's event-loop thread, except <see cref="RstsSent"/>, <see cref="ConnectionsOpened"/>
/// and <see cref="ConnectionsOpen"/>.
/// </summary>
internal interface IVsockBackend : IDisposable
{
    /// <summary>Open connections, host clients that have not finished their CONNECT line included.</summary>
    int ConnectionCount { get; }

    /// <summary>Bytes of connection buffers reserved now against the VM's vsock buffer budget.</summary>
    long BufferBytesReserved { get; }

    /// <summary>Connections refused at the connection limit or the buffer budget.</summary>
    long ConnectionsRefused { get; }

    /// <summary>Connections entered into the table so far, either side's (any thread).</summary>
    long ConnectionsOpened { get; }

    /// <summary>Connections in the table now (any thread; host clients still sending CONNECT are not counted).</summary>
    long ConnectionsOpen { get; }

    /// <summary>RSTs queued for the guest so far (any thread).</summary>
    long RstsSent { get; }

    /// <summary>False while so many replies wait for rx buffers that the tx queue should not be read.</summary>
    bool CanTakePacket { get; }

    /// <summary>A well-formed packet from the guest (its payload at most <see cref="VirtioVsock.MaxPayload"/> bytes).</summary>
    void OnGuestPacket(in VsockHeader header, ReadOnlySpan<byte> payload);

    /// <summary>A packet from the guest with a bad length: answered with RST (its connection, if any, ends).</summary>
    void RejectPacket(in VsockHeader header);

    /// <summary>Whether a packet is owed to the guest.</summary>
    bool HasPacketForGuest();

    /// <summary>
    /// Takes the next packet owed to the guest (after <see cref="HasPacketForGuest"/> said there is one), with at
    /// most <paramref name="room"/> payload bytes; <paramref name="payload"/> is valid until the next call.
    /// </summary>
    VsockHeader TakePacket(int room, out ReadOnlySpan<byte> payload);

    /// <summary>An epoll event with a tag the device did not register (its queues and wake eventfd have 0 .. 3).</summary>
    void OnEvent(ulong tag, uint events);

    /// <summary>Milliseconds until <see cref="ExpireDeadlines"/> has work (0 if now), or -1 if nothing waits for a deadline.</summary>
    int MillisecondsToNextDeadline();

    /// <summary>Gives up what waited too long (host clients whose guest never answered).</summary>
    void ExpireDeadlines();

    /// <summary>Forgets every connection and queued reply without telling the guest (a driver or transport reset).</summary>
    void DropAll();
}
