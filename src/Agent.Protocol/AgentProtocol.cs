namespace FireSharp.Agent.Protocol;

/// <summary>
/// Constants of the guest agent protocol (src/Proto/agent.proto). Shared by the daemon (host side) and <c>firesharp-agent</c> through this project, so the two
/// ends cannot disagree.
/// </summary>
public static class AgentProtocol
{
    /// <summary>
    /// The protocol version this build speaks (Hello.protocol_version). 2 added the function
    /// requests (FunctionInit, Invoke, FunctionShutdown); everything of version 1 is unchanged.
    /// </summary>
    public const uint Version = 2;

    /// <summary>The largest frame payload either end accepts: 8 MiB (a 6 MB Lambda payload or response and its envelope).</summary>
    public const int MaxFrameBytes = 8 << 20;

    /// <summary>The largest file WriteFile/ReadFile move: 1 MiB.</summary>
    public const int MaxFileBytes = 1 << 20;

    /// <summary>The largest ExecOutput chunk the agent sends: 64 KiB.</summary>
    public const int MaxOutputChunkBytes = 64 << 10;

    /// <summary>The vsock port the agent serves requests on (host: <c>CONNECT 52</c>).</summary>
    public const uint DefaultPort = 52;

    /// <summary>
    /// The vsock port on the host (CID 2) the agent reports readiness to. With hybrid vsock the VMM
    /// forwards it to the Unix socket <c>&lt;uds&gt;_53</c>.
    /// </summary>
    public const uint DefaultReadyPort = 53;

    /// <summary>The vsock CID of the host (VMADDR_CID_HOST).</summary>
    public const uint HostCid = 2;
}
