using System.Net.Sockets;
using System.Text;
using FireSharp.Cli;
using FireSharp.Tests.Agent;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Cli;

/// <summary>
/// A stand-in for a VM's hybrid vsock socket: every connection that says <c>CONNECT 52</c> gets
/// <c>OK</c> and is spliced to the agent's Unix socket; any other port is closed at once (as the
/// VMM does when nothing listens on that guest port).
/// </summary>
public sealed class FakeHybridVsock : IDisposable
{
    private readonly Socket _listener;
    private readonly string _agentSocket;
    private int _connects;

    /// <summary>Listens at <paramref name="path"/> (default: a new temporary directory's vm.sock).</summary>
    public FakeHybridVsock(string agentSocket, string? path = null)
    {
        _agentSocket = agentSocket;
        Path = path ?? System.IO.Path.Combine(TestPaths.TempDir(), "vm.sock");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(Path));
        _listener.Listen(16);
        _ = AcceptLoop();
    }

    public string Path { get; }

    /// <summary>How many CONNECTs to port 52 were spliced to the agent.</summary>
    public int Connects => Volatile.Read(ref _connects);

    private async Task AcceptLoop()
    {
        try
        {
            while (true)
            {
                var host = await _listener.AcceptAsync();
                _ = Serve(host);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    private async Task Serve(Socket host)
    {
        try
        {
            var line = new StringBuilder();
            var one = new byte[1];
            while (await host.ReceiveAsync(one) == 1 && one[0] != '\n') line.Append((char)one[0]);
            if (line.ToString() != "CONNECT 52") { host.Dispose(); return; }
            var guest = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await guest.ConnectAsync(new UnixDomainSocketEndPoint(_agentSocket));
            Interlocked.Increment(ref _connects);
            await host.SendAsync("OK 1073741824\n"u8.ToArray());
            _ = Splice(host, guest);
            _ = Splice(guest, host);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { host.Dispose(); }
    }

    private static async Task Splice(Socket from, Socket to)
    {
        var buffer = new byte[65536];
        try
        {
            int n;
            while ((n = await from.ReceiveAsync(buffer)) > 0) await to.SendAsync(buffer.AsMemory(0, n));
            to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    public void Dispose() => _listener.Dispose();
}

/// <summary><c>firesharp agent exec/ping</c> against a real agent on the host behind a fake hybrid vsock socket.</summary>
public sealed class AgentCommandsTests(SharedAgent shared) : IClassFixture<SharedAgent>
{
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token;

    private static async Task<(int Code, string Stdout, string Stderr, string Diagnostics)> ExecAsync(
        string vsock, string[] argv, TimeSpan? timeout = null, string stdin = "")
    {
        using var stdout = new MemoryStream();
        using var stderr = new MemoryStream();
        var diagnostics = new StringWriter();
        int code = await AgentCommands.ExecAsync(vsock, 52, argv, timeout, Encoding.UTF8.GetBytes(stdin), null, stdout, stderr, diagnostics, Deadline());
        return (code, Encoding.UTF8.GetString(stdout.ToArray()), Encoding.UTF8.GetString(stderr.ToArray()), diagnostics.ToString());
    }

    [Fact]
    public async Task Exec_prints_both_streams_and_exits_with_the_commands_code()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var (code, stdout, stderr, diagnostics) = await ExecAsync(vsock.Path, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
        Assert.Equal(3, code);
        Assert.Equal("out\n", stdout);
        Assert.Equal("err\n", stderr);
        Assert.Equal("", diagnostics);
        Assert.Equal(1, vsock.Connects);
    }

    [Fact]
    public async Task Exec_sends_stdin_to_the_command()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var (code, stdout, _, _) = await ExecAsync(vsock.Path, ["tr", "a-z", "A-Z"], stdin: "from the host\n");
        Assert.Equal(0, code);
        Assert.Equal("FROM THE HOST\n", stdout);
    }

    [Fact]
    public async Task Exec_timeout_kills_the_command_and_exits_1()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var (code, _, _, diagnostics) = await ExecAsync(vsock.Path, ["sleep", "30"], TimeSpan.FromMilliseconds(300));
        Assert.Equal(ExitCodes.Failed, code);
        Assert.Contains("killed", diagnostics);
    }

    [Fact]
    public async Task A_signal_becomes_128_plus_its_number()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var (code, _, _, diagnostics) = await ExecAsync(vsock.Path, ["sh", "-c", "kill -TERM $$"]);
        Assert.Equal(128 + 15, code);
        Assert.Contains("signal 15", diagnostics);
    }

    [Fact]
    public async Task A_missing_program_is_exit_1_and_a_missing_socket_or_agent_is_exit_3()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var missing = await ExecAsync(vsock.Path, ["/no/such/program"]);
        Assert.Equal(ExitCodes.Failed, missing.Code);
        Assert.Contains("/no/such/program", missing.Diagnostics);

        var noSocket = await ExecAsync(Path.Combine(TestPaths.TempDir(), "absent.sock"), ["true"]);
        Assert.Equal(ExitCodes.Unreachable, noSocket.Code);
        Assert.Contains("cannot connect", noSocket.Diagnostics);

        // Nothing listens on guest port 53: the VMM closes the connection after CONNECT.
        var diagnostics = new StringWriter();
        int code = await AgentCommands.ExecAsync(vsock.Path, 53, ["true"], null, default, null, Stream.Null, Stream.Null, diagnostics, Deadline());
        Assert.Equal(ExitCodes.Unreachable, code);
        Assert.Contains("CONNECT 53", diagnostics.ToString());
    }

    [Fact]
    public async Task Ping_reports_the_agent()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        var output = new StringWriter();
        var diagnostics = new StringWriter();
        Assert.Equal(0, await AgentCommands.PingAsync(vsock.Path, 52, output, diagnostics, Deadline()));
        Assert.StartsWith("agent ", output.ToString());
        Assert.Contains("round trip", output.ToString());

        Assert.Equal(ExitCodes.Unreachable, await AgentCommands.PingAsync(Path.Combine(TestPaths.TempDir(), "absent.sock"), 52, output, diagnostics, Deadline()));
    }

    [Fact]
    public void The_command_line_parses_argv_after_the_double_dash()
    {
        using var vsock = new FakeHybridVsock(shared.Agent.SocketPath);
        // Options of the guest command after "--" belong to it, not to firesharp.
        Assert.Equal(7, CliApp.Run(["agent", "exec", "--vsock", vsock.Path, "--timeout", "30", "--", "sh", "-c", "exit 7", "--timeout"]));
        Assert.Equal(0, CliApp.Run(["agent", "ping", "--vsock", vsock.Path]));
        Assert.Equal(2, vsock.Connects);
    }
}
