using System.Globalization;

namespace FireSharp.Daemon.Hosting;

/// <summary>
/// systemd socket activation (sd_listen_fds(3)): when firesharp.socket starts the service, systemd has bound
/// /run/firesharp/firesharp.sock (with the unit's SocketMode and SocketGroup) and passes it as fd 3, announced by
/// LISTEN_FDS=1 and LISTEN_PID=this process. The daemon then serves on that fd instead of binding its own socket,
/// and neither publishes nor removes the socket file: systemd owns it, and holds connections that arrive while the
/// daemon (re)starts.
/// </summary>
public static class SocketActivation
{
    /// <summary>The first passed fd (SD_LISTEN_FDS_START).</summary>
    public const int FirstFd = 3;

    /// <summary>The listening fd passed to this process, or null when it was not socket-activated.</summary>
    public static int? ListenFd() => ListenFd(Environment.GetEnvironmentVariable("LISTEN_PID"), Environment.GetEnvironmentVariable("LISTEN_FDS"), Environment.ProcessId);

    /// <summary>As <see cref="ListenFd()"/>, from the variables' values (a LISTEN_PID of another process means the fds are not ours).</summary>
    public static int? ListenFd(string? listenPid, string? listenFds, int processId) =>
        int.TryParse(listenPid, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid == processId
        && int.TryParse(listenFds, NumberStyles.None, CultureInfo.InvariantCulture, out int count) && count >= 1
            ? FirstFd : null;
}
