using System.Net.Sockets;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Tests.Agent;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Functions;

/// <summary>
/// Before a function snapshot the factory ends its agent connection and waits, not for a fixed delay, but until the
/// agent has closed its side (<see cref="AgentClient.CloseAndWaitForAgentAsync"/>): then the guest has processed
/// the close and the snapshot holds no half-open connection.
/// </summary>
public sealed class SnapshotAgentCloseTests : IAsyncLifetime
{
    private static readonly TimeSpan Live = TimeSpan.FromSeconds(60);
    private readonly string _dir = TestPaths.TempDir();
    private Socket? _listener;

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync()
    {
        _listener?.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        return Task.CompletedTask;
    }

    /// <summary>A connected pair over a Unix socket: the host's client and a stand-in for the agent's side.</summary>
    private async Task<(AgentClient Client, Socket AgentSide)> PairAsync()
    {
        var endpoint = new UnixDomainSocketEndPoint(Path.Combine(_dir, "agent.sock"));
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(endpoint);
        _listener.Listen(1);
        var host = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await host.ConnectAsync(endpoint).WaitAsync(Live);
        var agentSide = await _listener.AcceptAsync().WaitAsync(Live);
        return (new AgentClient(new NetworkStream(host, ownsSocket: true)), agentSide);
    }

    [Fact]
    public async Task The_close_completes_only_once_the_agent_has_closed_its_side()
    {
        var (client, agentSide) = await PairAsync();
        using var _ = agentSide;
        using var deadline = new CancellationTokenSource(Live);
        var closing = client.CloseAndWaitForAgentAsync(deadline.Token);

        // The agent sees the host's end of stream...
        var buffer = new byte[16];
        Assert.Equal(0, await agentSide.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(Live));
        // ...but until it closes its own side, the host must not go on to the snapshot.
        Assert.False(closing.IsCompleted);

        agentSide.Close();
        Assert.True(await closing.WaitAsync(Live));
    }

    [Fact]
    public async Task A_client_that_is_closed_already_or_not_on_a_socket_reports_false()
    {
        var (client, agentSide) = await PairAsync();
        using var _ = agentSide;
        client.Dispose();
        Assert.False(await client.CloseAndWaitForAgentAsync().WaitAsync(Live));

        await using var overMemory = new AgentClient(new MemoryStream());
        Assert.False(await overMemory.CloseAndWaitForAgentAsync().WaitAsync(Live));
    }

    [Fact]
    public async Task The_real_agent_closes_its_side_when_the_host_ends_the_connection()
    {
        await using var agent = await AgentUnderTest.StartAsync();
        using var deadline = new CancellationTokenSource(Live);
        var client = await agent.ConnectAsync(deadline.Token);
        await client.PingAsync("before"u8.ToArray(), deadline.Token);

        Assert.True(await client.CloseAndWaitForAgentAsync(deadline.Token));

        // The agent goes on serving new connections (the one the factory opens after the snapshot).
        await using var again = await agent.ConnectAsync(deadline.Token);
        Assert.Equal("after", (await again.PingAsync("after"u8.ToArray(), deadline.Token)).Payload.ToStringUtf8());
    }
}
