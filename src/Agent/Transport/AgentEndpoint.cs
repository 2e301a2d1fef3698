using System.Globalization;
using FireSharp.Agent.Protocol;

namespace FireSharp.Agent.Transport;

/// <summary>Where the agent listens or reports: <c>unix:PATH</c>, <c>vsock:PORT</c> or <c>vsock:CID:PORT</c>.</summary>
internal abstract record AgentEndpoint
{
    public static bool TryParse(string text, out AgentEndpoint? endpoint, out string? error)
    {
        endpoint = null;
        error = null;
        if (text.StartsWith("unix:", StringComparison.Ordinal) && text.Length > 5)
        {
            endpoint = new UnixEndpoint(text[5..]);
            return true;
        }
        if (text.StartsWith("vsock:", StringComparison.Ordinal))
        {
            var parts = text[6..].Split(':');
            if (parts.Length == 1 && TryUInt(parts[0], out uint port))
            {
                endpoint = new VsockEndpoint(AgentProtocol.HostCid, port);
                return true;
            }
            if (parts.Length == 2 && TryUInt(parts[0], out uint cid) && TryUInt(parts[1], out port))
            {
                endpoint = new VsockEndpoint(cid, port);
                return true;
            }
        }
        error = $"'{text}' is not unix:PATH, vsock:PORT or vsock:CID:PORT";
        return false;
    }

    private static bool TryUInt(string s, out uint value) => uint.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out value);
}

internal sealed record UnixEndpoint(string Path) : AgentEndpoint
{
    public override string ToString() => "unix:" + Path;
}

/// <summary>For listening only the port counts (the agent binds VMADDR_CID_ANY).</summary>
internal sealed record VsockEndpoint(uint Cid, uint Port) : AgentEndpoint
{
    public override string ToString() => $"vsock:{Cid}:{Port}";
}
