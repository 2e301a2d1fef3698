using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;

namespace FireSharp.Tests.Agent;

/// <summary>
/// The agent's Reseed request (per-clone entropy after a snapshot restore), against a host agent process:
/// only what is refused before the kernel is touched (a valid request would add entropy to the host's pool;
/// the Linux clone tests cover that in a guest).
/// </summary>
public sealed class AgentReseedTests(SharedAgent shared) : IClassFixture<SharedAgent>
{
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token;

    [Theory]
    [InlineData(0)]
    [InlineData(15)]
    [InlineData(513)]
    public async Task Entropy_outside_16_to_512_bytes_is_an_invalid_argument(int bytes)
    {
        await using var client = await shared.Agent.ConnectAsync(Deadline());
        var e = await Assert.ThrowsAsync<AgentException>(() => client.ReseedAsync(new byte[bytes], cancellationToken: Deadline()));
        Assert.Equal(AgentFailure.Remote, e.Failure);
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
        // The connection goes on.
        Assert.Equal([1, 2], (await client.PingAsync(new byte[] { 1, 2 }, Deadline())).Payload.ToByteArray());
    }

    [Theory]
    [InlineData("has space")]
    [InlineData("tab\there")]
    [InlineData("x123456789012345678901234567890123456789012345678901234567890abcd")]
    public async Task A_bad_hostname_is_an_invalid_argument(string hostname)
    {
        await using var client = await shared.Agent.ConnectAsync(Deadline());
        var e = await Assert.ThrowsAsync<AgentException>(() => client.ReseedAsync(new byte[32], hostname, Deadline()));
        Assert.Equal(ErrorCode.InvalidArgument, e.Code);
    }
}
