using System.Net.Sockets;
using System.Text;

namespace FireSharp.Agent.Processes;

/// <summary>Runs a short helper command (busybox ip, ...) and returns its status and output.</summary>
internal static class CommandRunner
{
    public static async Task<(ExitStatus Status, string Output)> RunAsync(ChildReaper reaper, IReadOnlyList<string> argv, TimeSpan timeout)
    {
        var env = new[] { "PATH=" + ProcessSpawner.DefaultPath };
        using var process = ProcessSpawner.Spawn(reaper, argv, env, cwd: null);
        process.Stdin.Shutdown(SocketShutdown.Send);
        var output = new StringBuilder();
        async Task Drain(Socket s)
        {
            var buffer = new byte[4096];
            try
            {
                int n;
                while ((n = await s.ReceiveAsync(buffer.AsMemory(), SocketFlags.None).ConfigureAwait(false)) > 0)
                    lock (output) if (output.Length < 4096) output.Append(Encoding.UTF8.GetString(buffer, 0, n));
            }
            catch (SocketException) { }
            catch (ObjectDisposedException) { }
        }
        var drain = Task.WhenAll(Drain(process.Stdout), Drain(process.Stderr));
        var finished = await Task.WhenAny(process.Exited, Task.Delay(timeout)).ConfigureAwait(false);
        if (finished != process.Exited) process.KillGroup(Tmds.Linux.LibC.SIGKILL);
        var status = await process.Exited.ConfigureAwait(false);
        await Task.WhenAny(drain, Task.Delay(500)).ConfigureAwait(false);
        return (status, output.ToString().Trim());
    }
}
