namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>How a non-blocking read or write on the host side of a connection went.</summary>
internal enum VsockIo
{
    /// <summary>Done: some bytes moved (a read of 0 bytes is end of stream).</summary>
    Done,

    /// <summary>Nothing moved now; try again when the stream is ready.</summary>
    WouldBlock,

    /// <summary>The stream is broken (reset, closed under us): the connection cannot go on.</summary>
    Failed,
}

/// <summary>
/// The host end of one vsock connection as <see cref="VsockConnection"/> sees it: a non-blocking byte stream
/// (a Unix socket in <see cref="VsockHostSocket"/>, an in-memory fake in the unit tests).
/// </summary>
internal interface IVsockHostStream
{
    /// <summary>Writes what the stream takes now; <paramref name="written"/> is how much.</summary>
    VsockIo Write(ReadOnlySpan<byte> data, out int written);

    /// <summary>Reads what is there now; <see cref="VsockIo.Done"/> with 0 bytes is end of stream.</summary>
    VsockIo Read(Span<byte> buffer, out int read);

    /// <summary>shutdown(SHUT_WR): the host reads end of stream after what was written. Errors are ignored.</summary>
    void ShutdownWrite();

    /// <summary>shutdown(SHUT_RD): nothing more will be read. Errors are ignored.</summary>
    void ShutdownRead();
}
