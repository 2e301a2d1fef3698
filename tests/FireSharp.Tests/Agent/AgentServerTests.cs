using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using Google.Protobuf;
using Xunit.Abstractions;

using FireSharp.Framing;

namespace FireSharp.Tests.Agent;

/// <summary>One agent process shared by the tests of a class.</summary>
public sealed class SharedAgent : IAsyncLifetime
{
    public AgentUnderTest Agent { get; private set; } = null!;

    public async Task InitializeAsync() => Agent = await AgentUnderTest.StartAsync();

    public async Task DisposeAsync() => await Agent.DisposeAsync();
}

/// <summary>
/// The agent's request handlers, served by a real firesharp-agent process over a Unix socket on
/// the host (no VM): ping, exec, files, and what malformed or vanishing clients do to it.
/// </summary>
public sealed class AgentServerTests(SharedAgent shared, ITestOutputHelper output) : IClassFixture<SharedAgent>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private AgentUnderTest Agent => shared.Agent;

    private static CancellationToken Deadline() => new CancellationTokenSource(Timeout).Token;

    [Fact]
    public async Task Ready_describes_the_agent_and_hello_agrees_on_version_1()
    {
        Assert.Equal(AgentProtocol.Version, Agent.Ready.Agent.ProtocolVersion);
        Assert.False(Agent.Ready.Agent.Pid1);
        Assert.Equal((uint)AgentProtocol.MaxFrameBytes, Agent.Ready.Agent.MaxFrameBytes);
        Assert.True(Agent.Ready.StartupUs > 0);
        await using var client = await Agent.ConnectAsync(Deadline());
        Assert.Equal(AgentProtocol.Version, client.ProtocolVersion);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), client.Agent!.KernelRelease);
        // A newer client is answered with the agent's version.
        var info = await client.HelloAsync(protocolVersion: 7, cancellationToken: Deadline());
        Assert.Equal(AgentProtocol.Version, client.ProtocolVersion);
        Assert.Equal(AgentProtocol.Version, info.ProtocolVersion);
    }

    [Fact]
    public async Task Hello_with_version_0_is_refused_and_the_connection_goes_on()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var e = await Assert.ThrowsAsync<AgentException>(() => client.HelloAsync(protocolVersion: 0, cancellationToken: Deadline()));
        Assert.Equal(ErrorCode.UnsupportedVersion, e.Code);
        var pong = await client.PingAsync("still here"u8.ToArray(), Deadline());
        Assert.Equal("still here", pong.Payload.ToStringUtf8());
    }

    [Fact]
    public async Task Ping_echoes_the_payload_and_reports_uptime()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var reply = await client.PingAsync(new byte[] { 1, 2, 3 }, Deadline());
        Assert.Equal(new byte[] { 1, 2, 3 }, reply.Payload.ToByteArray());
        Assert.True(reply.UptimeUs > 0);
    }

    [Fact]
    public async Task Exec_uname_r_prints_the_kernel_release()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("uname", "-r"), Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.Null(result.Signal);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), result.StdoutText.Trim());
        Assert.True(result.Pid > 0);
    }

    [Fact]
    public async Task Exec_feeds_stdin_to_cat()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var input = new byte[300_000]; // more than a socket buffer
        new Random(5).NextBytes(input);
        var result = await client.ExecAsync(new AgentCommand("cat") { Stdin = input }, Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(input, result.Stdout);
        Assert.Equal(input.Length, result.StdoutBytes);
    }

    [Fact]
    public async Task Exec_applies_env_and_cwd_and_clear_env()
    {
        var dir = Agent.Directory;
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "echo \"$GREETING\"; pwd")
        {
            Environment = new Dictionary<string, string> { ["GREETING"] = "hello agent" },
            WorkingDirectory = dir,
        }, Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.Equal($"hello agent\n{dir}\n", result.StdoutText);

        var cleared = await client.ExecAsync(new AgentCommand("/usr/bin/env")
        {
            ClearEnvironment = true,
            Environment = new Dictionary<string, string> { ["ONLY"] = "this" },
        }, Deadline());
        Assert.Equal("ONLY=this\n", cleared.StdoutText);
    }

    [Fact]
    public async Task Exec_reports_exit_code_and_stderr()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "echo oops >&2; exit 42"), Deadline());
        Assert.Equal(42, result.ExitCode);
        Assert.Null(result.Signal);
        Assert.Equal("oops\n", result.StderrText);
        Assert.Empty(result.Stdout);
    }

    [Fact]
    public async Task Exec_reports_the_signal_that_killed_the_command()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "kill -TERM $$"), Deadline());
        Assert.Null(result.ExitCode);
        Assert.Equal(15, result.Signal);
        Assert.False(result.TimedOut);
    }

    [Fact]
    public async Task Exec_child_gets_default_signal_dispositions()
    {
        // The runtime ignores SIGPIPE; a command must not inherit that (yes | head would never end).
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "yes | head -n 3; grep -E '^Sig(Ign|Blk)' /proc/self/status"), Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.StartsWith("y\ny\ny\n", result.StdoutText);
        // Standard signals 1-31 (32 and 33 are glibc's own, which it never lets a program reset).
        ulong Mask(string name) => Convert.ToUInt64(result.StdoutText.Split('\n').Single(l => l.StartsWith(name)).Split('\t')[1], 16) & 0x7fff_ffff;
        Assert.Equal(0ul, Mask("SigIgn:"));
        Assert.Equal(0ul, Mask("SigBlk:"));
    }

    [Fact]
    public async Task Exec_timeout_kills_a_hanging_command_and_says_so()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sleep", "100") { Timeout = TimeSpan.FromMilliseconds(300) }, Deadline());
        Assert.True(result.TimedOut);
        Assert.Equal(9, result.Signal);
        Assert.Null(result.ExitCode);
        // The agent still serves.
        Assert.NotNull(await client.PingAsync(cancellationToken: Deadline()));
    }

    [Fact]
    public async Task Exec_timeout_kills_the_whole_process_group()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "sleep 100 & echo $!; wait") { Timeout = TimeSpan.FromMilliseconds(300) }, Deadline());
        Assert.True(result.TimedOut);
        int grandchild = int.Parse(result.StdoutText.Trim());
        Assert.True(await ProcessGoneAsync(grandchild), $"sleep {grandchild} survived the timeout");
    }

    [Fact]
    public async Task Exec_stdout_flood_is_streamed_and_capture_stays_bounded()
    {
        const long total = 64L << 20;
        await using var client = await Agent.ConnectAsync(Deadline());
        long peakBefore = PeakRssKiB();
        long streamed = 0;
        var result = await client.ExecAsync(new AgentCommand("head", "-c", total.ToString(), "/dev/zero") { MaxCapturedBytes = 100_000 },
            (stream, chunk, _) =>
            {
                Assert.Equal(OutputStream.Stdout, stream);
                Assert.InRange(chunk.Length, 1, AgentProtocol.MaxOutputChunkBytes);
                streamed += chunk.Length;
                return ValueTask.CompletedTask;
            }, Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(total, result.StdoutBytes);
        Assert.Equal(total, streamed);
        Assert.Equal(100_000, result.Stdout.Length);
        Assert.True(result.StdoutTruncated);
        // The agent streamed rather than buffered: its peak RSS grew by far less than 64 MiB.
        Assert.InRange(PeakRssKiB() - peakBefore, 0, 24 << 10);
    }

    private long PeakRssKiB() =>
        long.Parse(File.ReadLines($"/proc/{Agent.Process.Id}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);

    [Fact]
    public async Task Exec_of_a_missing_program_is_an_exec_failed_error()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var e = await Assert.ThrowsAsync<AgentException>(() => client.ExecAsync(new AgentCommand("no-such-program-xyz"), Deadline()));
        Assert.Equal(AgentFailure.Remote, e.Failure);
        Assert.Equal(ErrorCode.ExecFailed, e.Code);
        Assert.Contains("no-such-program-xyz", e.Message);
        var missingCwd = await Assert.ThrowsAsync<AgentException>(() => client.ExecAsync(new AgentCommand("true") { WorkingDirectory = "/no/such/dir" }, Deadline()));
        Assert.Equal(ErrorCode.ExecFailed, missingCwd.Code);
        var empty = await Assert.ThrowsAsync<AgentException>(() => client.ExecAsync(new AgentCommand(), Deadline()));
        Assert.Equal(ErrorCode.InvalidArgument, empty.Code);
        Assert.Equal(0, (await client.ExecAsync(new AgentCommand("true"), Deadline())).ExitCode);
    }

    [Fact]
    public async Task Exec_does_not_wait_forever_for_a_background_child_holding_stdout()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "sleep 5 & echo started"), Deadline());
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("started\n", result.StdoutText);
    }

    [Fact]
    public async Task Orphans_of_commands_are_reaped_by_the_agent()
    {
        await using var client = await Agent.ConnectAsync(Deadline());
        var result = await client.ExecAsync(new AgentCommand("sh", "-c", "sleep 0.2 & echo $!"), Deadline());
        int orphan = int.Parse(result.StdoutText.Trim());
        // The agent is a child subreaper: the orphan becomes its child and, once it exits, is
        // waited for (a zombie would stay in /proc with state Z).
        Assert.True(await ProcessGoneAsync(orphan), $"orphan {orphan} was not reaped");
    }

    [Fact]
    public async Task A_client_that_vanishes_mid_exec_gets_its_command_killed()
    {
        var started = new TaskCompletionSource<int>();
        var client = await Agent.ConnectAsync(Deadline());
        using var cts = new CancellationTokenSource(Timeout);
        var exec = client.ExecAsync(new AgentCommand("sh", "-c", "echo $$; exec yes"), (_, chunk, _) =>
        {
            started.TrySetResult(int.Parse(Encoding.ASCII.GetString(chunk.Span).Split('\n')[0]));
            return ValueTask.CompletedTask;
        }, cts.Token);
        int pid = await started.Task.WaitAsync(Timeout);
        await cts.CancelAsync(); // aborts the connection in the middle of the output stream
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => exec);
        Assert.True(await ProcessGoneAsync(pid), $"yes ({pid}) kept running after its client left");
        await using var again = await Agent.ConnectAsync(Deadline());
        Assert.NotNull(await again.PingAsync(cancellationToken: Deadline()));
    }

    [Fact]
    public async Task Garbage_then_a_valid_request_on_a_new_connection_works()
    {
        using (var raw = await RawConnectAsync())
        {
            var junk = new byte[4096];
            new Random(1).NextBytes(junk);
            BinaryPrimitives.WriteUInt32LittleEndian(junk, 0x7fff_ffff); // an absurd length first
            await raw.SendAsync(junk);
            var reply = await ReadResponseAsync(raw);
            Assert.Equal(ErrorCode.FrameTooLarge, reply!.Error.Code);
            Assert.Null(await ReadResponseAsync(raw)); // then the agent closes
        }
        await using var client = await Agent.ConnectAsync(Deadline());
        Assert.NotNull(await client.PingAsync(cancellationToken: Deadline()));
    }

    [Fact]
    public async Task A_malformed_frame_gets_an_error_and_the_connection_goes_on()
    {
        using var raw = await RawConnectAsync();
        // A frame whose payload is not protobuf: field 1 as a varint that never ends.
        await raw.SendAsync(Frame([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        var error = await ReadResponseAsync(raw);
        Assert.Equal(0ul, error!.Id);
        Assert.Equal(ErrorCode.MalformedFrame, error.Error.Code);
        await raw.SendAsync(Frame(new Request { Id = 9, Ping = new PingRequest() }.ToByteArray()));
        var pong = await ReadResponseAsync(raw);
        Assert.Equal(9ul, pong!.Id);
        Assert.Equal(Response.BodyOneofCase.Pong, pong.BodyCase);
    }

    [Fact]
    public async Task An_unknown_request_type_gets_an_error_with_its_id()
    {
        using var raw = await RawConnectAsync();
        // id = 5, then field 99 (a request type from the future) with 3 bytes.
        var payload = new byte[] { 0x08, 0x05, 0x9a, 0x06, 0x03, 0x61, 0x62, 0x63 };
        await raw.SendAsync(Frame(payload));
        var reply = await ReadResponseAsync(raw);
        Assert.Equal(5ul, reply!.Id);
        Assert.Equal(ErrorCode.UnknownRequest, reply.Error.Code);
        await raw.SendAsync(Frame([])); // an empty Request: no body either
        Assert.Equal(ErrorCode.UnknownRequest, (await ReadResponseAsync(raw))!.Error.Code);
        await raw.SendAsync(Frame(new Request { Id = 6, Ping = new PingRequest() }.ToByteArray()));
        Assert.Equal(6ul, (await ReadResponseAsync(raw))!.Id);
    }

    [Fact]
    public async Task Truncated_frames_and_abrupt_closes_do_not_hurt_the_agent()
    {
        for (int i = 0; i < 20; i++)
        {
            using var raw = await RawConnectAsync();
            var frame = Frame(new Request { Id = 1, Exec = new ExecRequest { Argv = { "true" } } }.ToByteArray());
            await raw.SendAsync(frame.AsMemory(0, i % frame.Length));
        }
        await using var client = await Agent.ConnectAsync(Deadline());
        Assert.Equal(0, (await client.ExecAsync(new AgentCommand("true"), Deadline())).ExitCode);
    }

    [Fact]
    public async Task Requests_on_separate_connections_run_concurrently()
    {
        // Each command waits until all four have started (a barrier in the file system), so the
        // test only finishes if the agent runs them at the same time.
        var barrier = Path.Combine(Agent.Directory, "barrier-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(barrier);
        var script = $"touch {barrier}/$1; while [ $(ls {barrier} | wc -l) -lt 4 ]; do sleep 0.05; done; echo done $1";
        var clients = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Agent.ConnectAsync(Deadline())));
        try
        {
            var results = await Task.WhenAll(clients.Select((c, i) =>
                c.ExecAsync(new AgentCommand("sh", "-c", script, "sh", i.ToString()) { Timeout = TimeSpan.FromSeconds(20) }, Deadline())));
            for (int i = 0; i < 4; i++)
            {
                Assert.False(results[i].TimedOut);
                Assert.Equal($"done {i}\n", results[i].StdoutText);
            }
        }
        finally
        {
            foreach (var c in clients) await c.DisposeAsync();
        }
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task WriteFile_then_ReadFile_round_trips()
    {
        var path = Path.Combine(Agent.Directory, "sub", "dir", "file.bin");
        var data = new byte[AgentProtocol.MaxFileBytes];
        new Random(2).NextBytes(data);
        await using var client = await Agent.ConnectAsync(Deadline());
        await client.WriteFileAsync(path, data, mode: 0b111_101_000, createParents: true, cancellationToken: Deadline());
        Assert.Equal(data, await client.ReadFileAsync(path, Deadline()));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute,
            File.GetUnixFileMode(path));
        // Overwriting truncates.
        await client.WriteFileAsync(path, "short"u8.ToArray(), cancellationToken: Deadline());
        Assert.Equal("short", Encoding.UTF8.GetString(await client.ReadFileAsync(path, Deadline())));
        // procfs files report size 0 but have content.
        Assert.Contains("MemTotal", Encoding.UTF8.GetString(await client.ReadFileAsync("/proc/meminfo", Deadline())));
    }

    [Fact]
    public async Task File_limits_and_errors_are_clear()
    {
        var big = Path.Combine(Agent.Directory, "big.bin");
        await File.WriteAllBytesAsync(big, new byte[AgentProtocol.MaxFileBytes + 1]);
        await using var client = await Agent.ConnectAsync(Deadline());

        var tooLarge = await Assert.ThrowsAsync<AgentException>(() => client.ReadFileAsync(big, Deadline()));
        Assert.Equal(ErrorCode.FileTooLarge, tooLarge.Code);
        Assert.Equal(ErrorCode.NotFound, (await Assert.ThrowsAsync<AgentException>(() => client.ReadFileAsync(big + ".missing", Deadline()))).Code);
        Assert.Equal(ErrorCode.InvalidArgument, (await Assert.ThrowsAsync<AgentException>(() => client.ReadFileAsync(Agent.Directory, Deadline()))).Code);
        Assert.Equal(ErrorCode.InvalidArgument, (await Assert.ThrowsAsync<AgentException>(() => client.ReadFileAsync("relative/path", Deadline()))).Code);
        Assert.Equal(ErrorCode.NotFound, (await Assert.ThrowsAsync<AgentException>(() =>
            client.WriteFileAsync(Path.Combine(Agent.Directory, "no", "parent"), new byte[1], cancellationToken: Deadline()))).Code);

        // The client refuses an oversized write itself; a raw request gets the agent's answer.
        Assert.Equal(ErrorCode.FileTooLarge, (await Assert.ThrowsAsync<AgentException>(() =>
            client.WriteFileAsync(big, new byte[AgentProtocol.MaxFileBytes + 1], cancellationToken: Deadline()))).Code);
        using var raw = await RawConnectAsync();
        var write = new Request { Id = 3, WriteFile = new WriteFileRequest { Path = big, Data = ByteString.CopyFrom(new byte[AgentProtocol.MaxFileBytes + 1]) } };
        await raw.SendAsync(Frame(write.ToByteArray()));
        Assert.Equal(ErrorCode.FileTooLarge, (await ReadResponseAsync(raw))!.Error.Code);
        Assert.Equal(AgentProtocol.MaxFileBytes + 1, new FileInfo(big).Length); // untouched
    }

    // --- helpers ---------------------------------------------------------------------------

    private async Task<Socket> RawConnectAsync()
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(Agent.SocketPath));
        return socket;
    }

    private static byte[] Frame(byte[] payload)
    {
        var frame = new byte[4 + payload.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)payload.Length);
        payload.CopyTo(frame, 4);
        return frame;
    }

    /// <summary>The next Response on a raw connection, or null when the agent closed it.</summary>
    private static async Task<Response?> ReadResponseAsync(Socket socket)
    {
        using var reader = new FrameReader(new NetworkStream(socket, ownsSocket: false), AgentProtocol.MaxFrameBytes);
        var frame = await reader.ReadAsync(Deadline());
        if (frame.Status == FrameStatus.EndOfStream) return null;
        Assert.Equal(FrameStatus.Frame, frame.Status);
        return Response.Parser.ParseFrom(frame.Payload.Span);
    }

    /// <summary>True once <paramref name="pid"/> no longer exists (a zombie still does), within 10 s.</summary>
    private async Task<bool> ProcessGoneAsync(int pid)
    {
        for (int i = 0; i < 200; i++)
        {
            string? stat = null;
            try { stat = await File.ReadAllTextAsync($"/proc/{pid}/stat"); }
            catch (IOException) { }
            if (stat is null) return true;
            await Task.Delay(50);
            if (i == 199) output.WriteLine($"/proc/{pid}/stat: {stat}");
        }
        return false;
    }
}
