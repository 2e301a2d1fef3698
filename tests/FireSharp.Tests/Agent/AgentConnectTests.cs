using System.Net.Sockets;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Tests.Support;

using FireSharp.Framing;

namespace FireSharp.Tests.Agent;

/// <summary>
/// The host side of the connection: Firecracker-style hybrid vsock (CONNECT/OK) in front of a
/// real agent, and the readiness socket.
/// </summary>
public sealed class AgentConnectTests(SharedAgent shared) : IClassFixture<SharedAgent>
{
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token;

    /// <summary>
    /// A stand-in for the VMM's hybrid vsock socket: reads the CONNECT line, answers with
    /// <paramref name="reply"/> and, if it is OK, splices the stream to the agent's Unix socket.
    /// </summary>
    private static async Task<(string Path, Task<string> ConnectLine)> FakeHybridVsockAsync(string agentSocket, string? reply)
    {
        var path = Path.Combine(TestPaths.TempDir(), "vm.vsock");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var connectLine = Task.Run(async () =>
        {
            using (listener)
            {
                var host = await listener.AcceptAsync();
                var line = new StringBuilder();
                var one = new byte[1];
                while (await host.ReceiveAsync(one) == 1 && one[0] != '\n') line.Append((char)one[0]);
                if (reply is null) { host.Dispose(); return line.ToString(); }
                await host.SendAsync(Encoding.ASCII.GetBytes(reply));
                if (!reply.StartsWith("OK ", StringComparison.Ordinal)) { host.Dispose(); return line.ToString(); }
                var guest = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await guest.ConnectAsync(new UnixDomainSocketEndPoint(agentSocket));
                _ = Splice(host, guest);
                _ = Splice(guest, host);
                return line.ToString();
            }
        });
        await Task.Yield();
        return (path, connectLine);
    }

    private static async Task Splice(Socket from, Socket to)
    {
        var buffer = new byte[65536];
        try
        {
            int n;
            while ((n = await from.ReceiveAsync(buffer)) > 0) await to.SendAsync(buffer.AsMemory(0, n));
        }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }

    [Fact]
    public async Task Hybrid_vsock_connect_reaches_the_agent()
    {
        var (path, connectLine) = await FakeHybridVsockAsync(shared.Agent.SocketPath, "OK 1073741824\n");
        await using var client = await AgentClient.ConnectHybridVsockAsync(path, cancellationToken: Deadline());
        Assert.Equal("CONNECT 52", await connectLine);
        Assert.Equal(AgentProtocol.Version, client.ProtocolVersion);
        var result = await client.ExecAsync(new AgentCommand("echo", "through vsock"), Deadline());
        Assert.Equal("through vsock\n", result.StdoutText);
    }

    [Theory]
    [InlineData("NOPE\n")]
    [InlineData("OK notanumber\n")]
    [InlineData(null)]
    public async Task A_refused_hybrid_vsock_handshake_is_a_connect_error(string? reply)
    {
        var (path, _) = await FakeHybridVsockAsync(shared.Agent.SocketPath, reply);
        var e = await Assert.ThrowsAsync<AgentException>(() => AgentClient.ConnectHybridVsockAsync(path, 52, Deadline()));
        Assert.Equal(AgentFailure.ConnectFailed, e.Failure);
        Assert.Contains("CONNECT 52", e.Message);
    }

    [Fact]
    public async Task Missing_or_too_long_socket_paths_are_connect_errors()
    {
        var missing = await Assert.ThrowsAsync<AgentException>(() => AgentClient.ConnectUnixAsync("/nonexistent/agent.sock", Deadline()));
        Assert.Equal(AgentFailure.ConnectFailed, missing.Failure);
        Assert.Contains("/nonexistent/agent.sock", missing.Message);
        var tooLong = await Assert.ThrowsAsync<AgentException>(() => AgentClient.ConnectHybridVsockAsync("/tmp/" + new string('x', 200), 52, Deadline()));
        Assert.Equal(AgentFailure.ConnectFailed, tooLong.Failure);
        Assert.Contains("longer than 107 bytes", tooLong.Message);
    }

    [Fact]
    public void Ready_listener_refuses_an_existing_path()
    {
        var path = Path.Combine(TestPaths.TempDir(), "vm.vsock_53");
        File.WriteAllText(path, "");
        var e = Assert.Throws<AgentException>(() => AgentReadyListener.Bind(path));
        Assert.Contains("already exists", e.Message);
        Assert.Equal(path, HybridVsock.GuestInitiatedPath(path[..^3], 53));
    }

    [Fact]
    public async Task Ready_listener_skips_garbage_connections()
    {
        var path = Path.Combine(TestPaths.TempDir(), "vm.vsock_53");
        using var listener = AgentReadyListener.Bind(path);
        var wait = listener.WaitAsync(Deadline());
        using (var junk = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await junk.ConnectAsync(new UnixDomainSocketEndPoint(path));
            await junk.SendAsync(new byte[] { 3, 0, 0, 0, 0xff, 0xff, 0xff });
        }
        using (var good = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await good.ConnectAsync(new UnixDomainSocketEndPoint(path));
            var ready = new FireSharp.Proto.Agent.Response { Ready = new FireSharp.Proto.Agent.Ready { Port = 52, StartupUs = 7 } };
            await good.SendAsync(Frames.Encode(ready, AgentProtocol.MaxFrameBytes));
            var got = await wait;
            Assert.Equal(52u, got.Port);
            Assert.Equal(7ul, got.StartupUs);
        }
    }
}
