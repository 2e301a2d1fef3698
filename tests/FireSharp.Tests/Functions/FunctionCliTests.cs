using FireSharp.Cli;

namespace FireSharp.Tests.Functions;

/// <summary>`firesharp fn ...` against FunctionService over a fake VM factory: exit codes of the client commands.</summary>
public sealed class FunctionCliTests : IAsyncLifetime
{
    private FunctionTestServer _server = null!;

    public async Task InitializeAsync() => _server = await FunctionTestServer.StartAsync();

    public async Task DisposeAsync() => await _server.DisposeAsync();

    private int Fn(params string[] args) => CliApp.Run(["fn", .. args, "--socket", _server.Options.Socket]);

    [Fact]
    public void Create_invoke_list_concurrency_and_remove_through_the_cli()
    {
        Assert.Equal(0, Fn("create", "cli", "--code", _server.Code, "--kernel", _server.Kernel, "--rootfs", _server.Rootfs, "--memory", "256", "--env", "A=1"));
        Assert.Equal(0, Fn("invoke", "cli", "--payload", "{\"x\":1}", "--verbose"));
        Assert.Equal(1, _server.Factory.Created);
        Assert.Equal(0, Fn("ls"));
        Assert.Equal(0, Fn("get", "cli", "--json"));
        Assert.Equal(0, Fn("concurrency", "cli", "--reserved", "3", "--provisioned", "0"));
        Assert.Equal(0, Fn("account"));
        Assert.Equal(0, Fn("update", "cli", "--memory", "512"));
        // A handler error: the call worked, the function failed (exit 1).
        Assert.Equal(1, Fn("invoke", "cli", "--payload", "fail"));
        Assert.Equal(0, Fn("rm", "cli"));
        // A function that is gone: exit 4; refused requests: exit 2.
        Assert.Equal(4, Fn("invoke", "cli", "--payload", "{}"));
        Assert.Equal(2, Fn("create", "bad.name", "--code", _server.Code, "--kernel", _server.Kernel, "--rootfs", _server.Rootfs));
        Assert.Equal(2, Fn("invoke", "x", "--type", "Sometimes"));
    }
}
