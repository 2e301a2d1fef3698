namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>The states of a <see cref="VsockConnection"/>.</summary>
internal enum VsockConnState
{
    /// <summary>A host client asked for a guest port: REQUEST owed or sent to the guest; waiting for its RESPONSE or RST.</summary>
    HostConnecting,

    Established,

    /// <summary>Over, with nothing more owed to the guest (it sent RST, it got SHUTDOWN both ways, or it never saw the connection).</summary>
    Closed,

    /// <summary>Over abortively: the guest must get RST.</summary>
    Killed,
}
