using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace FireSharp.Devices.Virtio.Vsock;

/// <summary>
/// A host client of the hybrid socket that has not finished its <c>CONNECT &lt;port&gt;\n</c> line. The line is read
/// without consuming anything after its newline: those bytes belong to the stream. Event-loop thread only.
/// </summary>
internal sealed class VsockConnectLine(VsockHostSocket socket)
{
    /// <summary>Longest <c>CONNECT &lt;port&gt;\n</c> line accepted.</summary>
    public const int MaxLength = 32;

    private readonly byte[] _line = new byte[MaxLength];
    private int _length;

    public VsockHostSocket Socket { get; } = socket;

    /// <summary>
    /// Reads what the client sent so far. Returns the port once the whole line is in; null while more is to come
    /// or when the client is done for: then <paramref name="gone"/> (it left or failed) or <paramref name="refused"/>
    /// (why its line is not <c>CONNECT &lt;port&gt;</c>) says so.
    /// </summary>
    public uint? TryRead(out bool gone, out string? refused)
    {
        gone = false;
        refused = null;
        var s = Socket.Socket;
        Span<byte> peek = stackalloc byte[MaxLength];
        int room = MaxLength - _length;
        int n = s.Receive(peek[..room], SocketFlags.Peek, out var err);
        if (err == SocketError.WouldBlock) return null;
        if (err != SocketError.Success || n == 0)
        {
            gone = true;
            return null;
        }
        int newline = peek[..n].IndexOf((byte)'\n');
        int take = newline >= 0 ? newline + 1 : n;
        int got = s.Receive(_line.AsSpan(_length, take), SocketFlags.None, out err);
        if (err != SocketError.Success || got != take)
        {
            gone = true;
            return null;
        }
        _length += take;
        if (newline < 0)
        {
            if (_length >= MaxLength) refused = "no newline";
            return null;
        }
        var line = Encoding.ASCII.GetString(_line, 0, _length - 1).TrimEnd('\r');
        if (!line.StartsWith("CONNECT ", StringComparison.Ordinal)
            || !uint.TryParse(line.AsSpan(8), NumberStyles.None, CultureInfo.InvariantCulture, out uint port))
        {
            refused = "not 'CONNECT <port>'";
            return null;
        }
        return port;
    }
}
