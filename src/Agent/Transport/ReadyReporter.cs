using System.Net.Sockets;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;

using FireSharp.Framing;

namespace FireSharp.Agent.Transport;

/// <summary>
/// Tells the host the agent is serving: connects to the ready endpoint (vsock CID 2 port 53 in the
/// guest; hybrid vsock delivers that to the host's <c>&lt;uds&gt;_53</c>), sends one Response frame
/// with <c>ready</c>, and closes. Retries for a while if the host is not listening yet.
/// </summary>
internal static class ReadyReporter
{
    public static async Task<bool> ReportAsync(AgentEndpoint endpoint, Ready ready, TimeSpan giveUpAfter, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + giveUpAfter;
        var delay = TimeSpan.FromMilliseconds(50);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                using var socket = await ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
                await using var stream = new SocketStream(socket);
                using var writer = new FrameWriter(stream, AgentProtocol.MaxFrameBytes);
                await writer.WriteAsync(new Response { Ready = ready }, cancellationToken).ConfigureAwait(false);
                socket.Shutdown(SocketShutdown.Send);
                // Wait for the host to close (its EOF means it has the frame), briefly.
                var buffer = new byte[16];
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                wait.CancelAfter(TimeSpan.FromSeconds(2));
                try { while (await socket.ReceiveAsync(buffer.AsMemory(), SocketFlags.None, wait.Token).ConfigureAwait(false) > 0) { } }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { }
                Log.Debug($"reported ready to {endpoint} (attempt {attempt})");
                return true;
            }
            catch (Exception e) when (e is IOException or SocketException)
            {
                if (DateTime.UtcNow + delay > deadline)
                {
                    Log.Error($"cannot report ready to {endpoint} after {attempt} attempts: {e.Message}");
                    return false;
                }
                if (attempt == 1) Log.Info($"ready endpoint {endpoint} not there yet ({e.Message}); retrying");
            }
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
        }
    }

    private static async Task<Socket> ConnectAsync(AgentEndpoint endpoint, CancellationToken cancellationToken)
    {
        switch (endpoint)
        {
            case UnixEndpoint u:
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(u.Path), cancellationToken).ConfigureAwait(false);
                    return socket;
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            case VsockEndpoint v:
                // A blocking connect (the runtime cannot connect AF_VSOCK itself); bounded by the
                // kernel's 2 s vsock connect timeout.
                return await Task.Run(() => Vsock.Connect(v.Cid, v.Port), cancellationToken).ConfigureAwait(false);
            default:
                throw new ArgumentException("unknown endpoint " + endpoint);
        }
    }
}
