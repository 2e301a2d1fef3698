using System.Text.Json;
using FireSharp.Proto.Agent;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Agent;

/// <summary>
/// The C# NativeAOT example function (examples/csharp, `make example-csharp`) against the agent's
/// Runtime API on the host. `make test` builds the example first; a missing bootstrap is a failure.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RuntimeCSharpExampleTests(RuntimeAgent fixture) : IClassFixture<RuntimeAgent>
{
    private static readonly string Bootstrap = Path.Combine(TestPaths.RepoRoot, "build", "examples", "csharp", "bootstrap");

    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token;

    private FunctionInitRequest NewFunction()
    {
        Assert.True(File.Exists(Bootstrap), $"{Bootstrap} is missing: run make example-csharp (make test does)");
        var init = fixture.NewFunction(functionSh: null, withBootstrap: false);
        var target = Path.Combine(init.TaskRoot, "bootstrap");
        File.Copy(Bootstrap, target);
        File.SetUnixFileMode(target, (UnixFileMode)0b111_101_101);
        return init;
    }

    [Fact]
    public async Task The_csharp_example_answers_and_reports_errors()
    {
        var init = NewFunction();
        await using var client = await fixture.ConnectAsync(Deadline());
        var initReply = await client.InitFunctionAsync(init, Deadline());
        Assert.True(initReply.Ok, initReply.ToString());

        var request = RuntimeAgent.Invocation("""{"x":1}""");
        var reply = await client.InvokeFunctionAsync(request, Deadline());
        Assert.Equal(InvokeStatus.Success, reply.Status);
        var json = JsonDocument.Parse(reply.Payload.ToStringUtf8()).RootElement;
        Assert.Equal("hello from C# NativeAOT", json.GetProperty("message").GetString());
        Assert.Equal(request.RequestId, json.GetProperty("requestId").GetString());
        Assert.Equal(1, json.GetProperty("event").GetProperty("x").GetInt32());
        Assert.Contains("handling " + request.RequestId, reply.LogTail);

        var failing = await client.InvokeFunctionAsync(RuntimeAgent.Invocation("""{"fail":true}"""), Deadline());
        Assert.Equal(InvokeStatus.FunctionError, failing.Status);
        Assert.False(failing.Unhandled);
        Assert.Equal("InvalidOperationException", failing.ErrorType);
        await client.ShutdownFunctionAsync(new FunctionShutdownRequest(), Deadline());
    }

    [Fact]
    public async Task The_csharp_example_reports_an_init_error()
    {
        var init = NewFunction();
        init.Env["HELLO_FAIL_INIT"] = "1";
        await using var client = await fixture.ConnectAsync(Deadline());
        var reply = await client.InitFunctionAsync(init, Deadline());
        Assert.False(reply.Ok);
        Assert.Equal("InvalidOperationException", reply.ErrorType);
        Assert.Contains("HELLO_FAIL_INIT", reply.ErrorMessage);
    }
}
