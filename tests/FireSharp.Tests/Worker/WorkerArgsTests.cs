using FireSharp.Worker;
using Microsoft.Extensions.Logging;

namespace FireSharp.Tests.Worker;

/// <summary>firesharp-vmm's own command-line parser (it replaced System.CommandLine to keep the per-VM process small).</summary>
public sealed class WorkerArgsTests
{
    [Fact]
    public void Parses_the_options_the_daemon_passes()
    {
        var a = WorkerArgs.Parse(["--socket", "/run/w.sock", "--log", "/var/log/w.log", "--id", "vm-1", "--log-level", "Warning"]);
        Assert.Null(a.Error);
        Assert.False(a.Help);
        Assert.Equal("/run/w.sock", a.Socket);
        Assert.Equal("/var/log/w.log", a.Log);
        Assert.Equal("vm-1", a.Id);
        Assert.Equal(LogLevel.Warning, a.Level);
    }

    [Fact]
    public void Seccomp_is_a_flag_and_its_test_trigger_needs_it()
    {
        Assert.False(WorkerArgs.Parse(["--socket", "/s"]).Seccomp);
        var a = WorkerArgs.Parse(["--seccomp", "--socket", "/s", "--seccomp-test-trigger=socket"]);
        Assert.Null(a.Error);
        Assert.True(a.Seccomp);
        Assert.Equal("socket", a.SeccompTestTrigger);
    }

    [Fact]
    public void Accepts_name_equals_value_and_defaults_the_rest()
    {
        var a = WorkerArgs.Parse(["--socket=/s", "--log-level=debug"]);
        Assert.Null(a.Error);
        Assert.Equal("/s", a.Socket);
        Assert.Null(a.Log);
        Assert.Equal(LogLevel.Debug, a.Level);
        Assert.Equal(LogLevel.Information, WorkerArgs.Parse(["--socket", "/s"]).Level);
    }

    [Theory]
    [InlineData(new string[0], "--socket is required")]
    [InlineData(new[] { "--log", "/l" }, "--socket is required")]
    [InlineData(new[] { "--socket" }, "--socket needs a value")]
    [InlineData(new[] { "--socket", "/a", "--socket", "/b" }, "--socket given twice")]
    [InlineData(new[] { "--socket", "/a", "--bogus" }, "unknown argument '--bogus'")]
    [InlineData(new[] { "--socket", "/a", "--log-level", "loud" }, "--log-level: 'loud' is not a log level")]
    [InlineData(new[] { "--socket", "/a", "--log-level", "42" }, "--log-level: '42' is not a log level")]
    [InlineData(new[] { "--socket", "/a", "--seccomp", "--seccomp" }, "--seccomp given twice")]
    [InlineData(new[] { "--socket", "/a", "--seccomp-test-trigger", "execve" }, "--seccomp-test-trigger needs --seccomp")]
    [InlineData(new[] { "--socket", "/a", "--seccomp", "--seccomp-test-trigger", "ptrace" }, "--seccomp-test-trigger: 'ptrace' is not one of execve, socket")]
    public void Rejects_bad_command_lines(string[] args, string error)
    {
        var a = WorkerArgs.Parse(args);
        Assert.Equal(error, a.Error);
        Assert.Null(a.Socket);
    }

    [Fact]
    public void Help_is_honoured_in_order()
    {
        Assert.True(WorkerArgs.Parse(["--help", "--bogus"]).Help);
        Assert.True(WorkerArgs.Parse(["-h"]).Help);
        var a = WorkerArgs.Parse(["--bogus", "--help"]); // the first problem is reported
        Assert.False(a.Help);
        Assert.Equal("unknown argument '--bogus'", a.Error);
    }
}
