using System.Net.Sockets;
using FireSharp.Cli;
using FireSharp.Tests.Support;
using Grpc.Core;

namespace FireSharp.Tests.Cli;

/// <summary>The exit-code table and errors that name the fix: one line and a hint, never the whole help.</summary>
[Collection("process-wide resources")]
public class CliErrorsTests
{
    /// <summary>Runs the CLI in this process with stdout and stderr captured.</summary>
    internal static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var (out0, err0) = (Console.Out, Console.Error);
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            return (CliApp.Run(args), stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(out0);
            Console.SetError(err0);
        }
    }

    private static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void No_daemon_names_the_socket_and_the_service()
    {
        string socket = Path.Combine(TestPaths.TempDir(), "firesharp.sock");
        foreach (var args in new[] { new[] { "vm", "ls" }, ["fn", "ls"], ["vm", "get", "x"], ["snapshot", "restore", "/tmp/x"] })
        {
            var (code, _, err) = Run([.. args, "--socket", socket]);
            Assert.Equal(ExitCodes.Unreachable, code);
            Assert.Equal($"firesharp: error: no daemon at {socket} (is firesharp.service running? systemctl status firesharp)", Lines(err)[0]);
            Assert.Equal(2, Lines(err).Length);
        }
    }

    [Fact]
    public void Permission_denied_on_the_socket_names_the_group()
    {
        // As root the kernel lets any socket be connected to, so the mapping is checked on the exception gRPC raises.
        var inner = new HttpRequestException("Permission denied (localhost:80)", new SocketException((int)SocketError.AccessDenied));
        var e = CliErrors.FromRpc(new RpcException(new Status(StatusCode.Unavailable, "Error starting gRPC call.", inner)), "/run/firesharp/firesharp.sock");
        Assert.Equal(ExitCodes.Unreachable, e.ExitCode);
        Assert.Equal("permission denied on /run/firesharp/firesharp.sock (add yourself to group firesharp)", e.Message);
        Assert.Contains("usermod", e.Hint);
    }

    [Theory]
    [InlineData(StatusCode.NotFound, ExitCodes.NotFound)]
    [InlineData(StatusCode.InvalidArgument, ExitCodes.Usage)]
    [InlineData(StatusCode.OutOfRange, ExitCodes.Usage)]
    [InlineData(StatusCode.FailedPrecondition, ExitCodes.Failed)]
    [InlineData(StatusCode.AlreadyExists, ExitCodes.Failed)]
    [InlineData(StatusCode.PermissionDenied, ExitCodes.Failed)]
    [InlineData(StatusCode.ResourceExhausted, ExitCodes.Failed)]
    [InlineData(StatusCode.DeadlineExceeded, ExitCodes.Failed)]
    [InlineData(StatusCode.Internal, ExitCodes.Failed)]
    [InlineData(StatusCode.Unavailable, ExitCodes.Unreachable)]
    public void Grpc_statuses_map_onto_the_one_table(StatusCode status, int exit)
    {
        var e = CliErrors.FromRpc(new RpcException(new Status(status, "the detail")), "/s.sock");
        Assert.Equal(exit, e.ExitCode);
        Assert.Contains("the detail", e.Message);
    }

    [Theory]
    [InlineData("vm", "create", "x", "--kernel", "/k", "--mem-mib", "1X")]
    [InlineData("vm", "create", "x", "--kernel", "/k", "--mem", "lots")]
    [InlineData("fn", "create", "f", "--code", "/c", "--memory", "1T1")]
    [InlineData("run", "--kernel", "/k", "--mem", "12Q")]
    [InlineData("vm", "ls", "-o", "xml")]
    [InlineData("vm", "frobnicate")]
    [InlineData("run", "--kernel", "/k", "--log-level", "loud")]
    public void Bad_values_are_one_line_and_a_hint_with_exit_2(params string[] args)
    {
        var (code, stdout, err) = Run(args[0] == "run" ? args : [.. args, "--socket", "/nonexistent/firesharp.sock"]);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Equal("", stdout);
        var lines = Lines(err);
        Assert.InRange(lines.Length, 2, 3);
        Assert.StartsWith("firesharp: error: ", lines[0]);
        Assert.StartsWith("hint: ", lines[^1]);
        Assert.DoesNotContain("Usage:", err);
    }

    [Fact]
    public void A_bad_drive_or_net_on_vm_create_is_exit_2_before_any_call()
    {
        // No daemon: a value error must win over "no daemon" (the request is never sent).
        var (code, _, err) = Run("vm", "create", "x", "--kernel", "/k", "--drive", "/a,colour=blue", "--socket", "/nonexistent/firesharp.sock");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--drive /a,colour=blue: unknown key 'colour'", err);
        (code, _, err) = Run("vm", "create", "x", "--kernel", "/k", "--net", "tap0,gw=10.0.0.1,ip=10.0.0.2/24", "--socket", "/nonexistent/firesharp.sock");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("gw=", err);
    }

    [Fact]
    public void Log_levels_share_one_vocabulary()
    {
        foreach (var (name, level) in new[] { ("trace", Microsoft.Extensions.Logging.LogLevel.Trace), ("Verbose", Microsoft.Extensions.Logging.LogLevel.Trace),
                     ("information", Microsoft.Extensions.Logging.LogLevel.Information), ("Fatal", Microsoft.Extensions.Logging.LogLevel.Critical), ("warn", Microsoft.Extensions.Logging.LogLevel.Warning) })
        {
            Assert.True(FireSharp.Daemon.Hosting.LogLevels.TryParse(name, out var parsed), name);
            Assert.Equal(level, parsed);
        }
        Assert.False(FireSharp.Daemon.Hosting.LogLevels.TryParse("loud", out _));
    }

    [Fact]
    public void Help_ends_with_the_exit_code_table()
    {
        var (code, stdout, _) = Run("--help");
        Assert.Equal(0, code);
        Assert.Contains(ExitCodes.Table, stdout.ReplaceLineEndings("\n"));
        Assert.Contains("completion", stdout);
    }
}
