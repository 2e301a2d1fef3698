using System.Buffers.Binary;
using System.Net.Sockets;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Who is at the other end of a connected Unix socket, as the kernel recorded it at connect() time:
/// SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS (the supplementary groups). Read with
/// <see cref="Socket.GetRawSocketOption"/>, so no P/Invoke is needed; the option numbers are x86-64/generic Linux.
/// </summary>
public readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid, IReadOnlyList<uint> Groups)
{
    private const int SolSocket = 1, SoPeerCred = 17, SoPeerGroups = 59;

    /// <summary>Most groups read (NGROUPS_MAX is 65536; a peer in more than this many is judged on the first 1024).</summary>
    private const int MaxGroups = 1024;

    /// <summary>The peer of a connected AF_UNIX socket; null when the socket is not one or the kernel will not say.</summary>
    public static PeerCredentials? Of(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (socket.AddressFamily != AddressFamily.Unix) return null;
        Span<byte> ucred = stackalloc byte[12]; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) != 12) return null;
        }
        catch (SocketException) { return null; }
        int pid = BinaryPrimitives.ReadInt32LittleEndian(ucred);
        uint uid = BinaryPrimitives.ReadUInt32LittleEndian(ucred[4..]), gid = BinaryPrimitives.ReadUInt32LittleEndian(ucred[8..]);

        var groups = new byte[MaxGroups * 4];
        uint[] supplementary;
        try
        {
            int length = socket.GetRawSocketOption(SolSocket, SoPeerGroups, groups);
            supplementary = new uint[length / 4];
            for (int i = 0; i < supplementary.Length; i++) supplementary[i] = BinaryPrimitives.ReadUInt32LittleEndian(groups.AsSpan(i * 4));
        }
        catch (SocketException)
        {
            supplementary = []; // ERANGE (more groups than we read) or a kernel before 4.13: judged on the primary gid alone
        }
        return new PeerCredentials(pid, uid, gid, supplementary);
    }

    /// <summary>True if the peer's primary or a supplementary group is <paramref name="gid"/>.</summary>
    public bool InGroup(uint gid) => Gid == gid || Groups.Contains(gid);
}
