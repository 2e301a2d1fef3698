using CsCheck;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;

namespace FireSharp.Tests.Agent;

/// <summary>The firesharp.* kernel command line keys: the VMM writes them, the agent reads them.</summary>
public sealed class AgentBootConfigTests
{
    [Fact]
    public void Parses_the_agent_keys_and_ignores_the_rest()
    {
        var errors = new List<string>();
        var config = AgentBootConfig.Parse(
            "console=ttyS0 reboot=k firesharp.agent=1 firesharp.hostname=fn-42 quiet " +
            "firesharp.mount=/dev/vdb:/opt:ro,/dev/vdc:/var/task:rw:ext4 firesharp.ip=172.16.0.2/24,172.16.0.1 " +
            "firesharp.ip.dev=eth1 firesharp.dns=1.1.1.1,8.8.8.8 firesharp.agent.port=1024 firesharp.agent.ready=0\n", errors);
        Assert.Empty(errors);
        Assert.True(config.Start);
        Assert.Equal("fn-42", config.Hostname);
        Assert.Equal([new AgentMount("/dev/vdb", "/opt"), new AgentMount("/dev/vdc", "/var/task", ReadOnly: false)], config.Mounts);
        Assert.Equal("172.16.0.2/24", config.Address);
        Assert.Equal("172.16.0.1", config.Gateway);
        Assert.Equal("eth1", config.NetDevice);
        Assert.Equal(["1.1.1.1", "8.8.8.8"], config.Dns);
        Assert.Equal(1024u, config.Port);
        Assert.Equal(0u, config.ReadyPort);
    }

    [Fact]
    public void Defaults_without_keys()
    {
        var config = AgentBootConfig.Parse("console=ttyS0 root=/dev/vda");
        Assert.False(config.Start);
        Assert.Equal(AgentProtocol.DefaultPort, config.Port);
        Assert.Equal(AgentProtocol.DefaultReadyPort, config.ReadyPort);
        Assert.Null(config.Hostname);
        Assert.Empty(config.Mounts);
        Assert.Null(config.Address);
    }

    [Theory]
    [InlineData("firesharp.hostname=bad_name!")]
    [InlineData("firesharp.agent.port=0")]
    [InlineData("firesharp.agent.port=-1")]
    [InlineData("firesharp.agent.ready=x")]
    [InlineData("firesharp.mount=vdb:/opt")]
    [InlineData("firesharp.mount=/dev/vdb")]
    [InlineData("firesharp.mount=/dev/vdb:/")]
    [InlineData("firesharp.mount=/dev/vdb:/opt/../etc")]
    [InlineData("firesharp.mount=/dev/vdb:/opt:rx")]
    [InlineData("firesharp.mount=/dev/vdb:/opt:ro:Ext4!")]
    [InlineData("firesharp.ip=10.0.0.2")]
    [InlineData("firesharp.ip=10.0.0.2/33")]
    [InlineData("firesharp.ip=10.0.0.2/24,gateway")]
    [InlineData("firesharp.dns=::1")]
    [InlineData("firesharp.ip.dev=this-name-is-too-long")]
    public void A_malformed_value_is_skipped_with_an_error(string word)
    {
        var errors = new List<string>();
        var config = AgentBootConfig.Parse("console=ttyS0 " + word, errors);
        Assert.Single(errors);
        Assert.Equal(AgentBootConfig.Parse("console=ttyS0") with { }, config with { Mounts = [], Dns = [] });
    }

    [Fact]
    public void Quoted_words_keep_their_spaces()
    {
        Assert.Equal(["a=b c", "d"], AgentBootConfig.SplitCmdline(" a=\"b c\"  d \n"));
    }

    [Fact]
    public void ToCmdline_round_trips_through_Parse()
    {
        var path = Gen.String[Gen.Char["abcdefghij0123456789-_"], 1, 8].Array[1, 3].Select(parts => "/" + string.Join('/', parts));
        var mount = Gen.Select(path, path.Where(p => p != "/"), Gen.Bool, Gen.Int[0, 2].Select(i => new[] { "ext4", "squashfs", "erofs" }[i]),
            (s, t, ro, fs) => new AgentMount(s, t, ro, fs));
        var octet = Gen.Int[0, 255];
        var ip = Gen.Select(octet, octet, octet, octet, (a, b, c, d) => $"{a}.{b}.{c}.{d}");
        var config = Gen.Select(Gen.UInt[1, 100_000], Gen.UInt[0, 100_000], Gen.String[Gen.Char["abcxyz019-."], 1, 20].Null(),
            mount.Array[0, 3], Gen.Select(ip, Gen.Int[0, 32], ip.Null(), Gen.Bool, (a, p, g, on) => on ? new[] { $"{a}/{p}", g } : null), ip.Array[0, 2],
            (port, ready, host, mounts, net, dns) => new AgentBootConfig
            {
                Port = port,
                ReadyPort = ready,
                Hostname = host,
                Mounts = mounts,
                Address = net?[0],
                Gateway = net?[1],
                Dns = dns,
            });
        config.Sample(c =>
        {
            var errors = new List<string>();
            var parsed = AgentBootConfig.Parse("console=ttyS0 " + c.ToCmdline() + " quiet", errors);
            Assert.Empty(errors);
            Assert.Equal(c.Port, parsed.Port);
            Assert.Equal(c.ReadyPort, parsed.ReadyPort);
            Assert.Equal(c.Hostname, parsed.Hostname);
            Assert.Equal(c.Mounts, parsed.Mounts);
            Assert.Equal(c.Address, parsed.Address);
            Assert.Equal(c.Gateway, parsed.Gateway);
            Assert.Equal(c.Dns, parsed.Dns);
            Assert.True(parsed.Start);
        }, iter: 500);
    }

    [Fact]
    public void ToCmdline_refuses_values_that_would_not_survive()
    {
        Assert.Throws<ArgumentException>(() => new AgentBootConfig { Hostname = "two words" }.ToCmdline());
        Assert.Throws<ArgumentException>(() => new AgentBootConfig { Mounts = [new AgentMount("/dev/vdb", "/a,b")] }.ToCmdline());
        Assert.Throws<ArgumentException>(() => new AgentBootConfig { Gateway = "10.0.0.1" }.ToCmdline());
        Assert.Equal("firesharp.agent=1", new AgentBootConfig().ToCmdline());
    }
}
