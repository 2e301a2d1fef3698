using FireSharp.Daemon;
using FireSharp.Daemon.Hosting;
using Microsoft.Extensions.Configuration;
using Serilog.Events;
using Serilog.Formatting.Display;
using Serilog.Parsing;

namespace FireSharp.Tests.Api;

public sealed class DaemonConfigTests
{
    [Fact]
    public void Configuration_layers_file_then_environment_then_arguments()
    {
        string dir = Path.Combine(Path.GetTempPath(), "fs-cfg-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "config.json");
            File.WriteAllText(file, """{ "StateDir": "/srv/from-file", "MaxVms": 5, "SocketMode": "0600", "SocketGroup": "kvm" }""");
            var config = new ConfigurationBuilder()
                .AddJsonFile(file)
                .AddInMemoryCollection(new Dictionary<string, string?> { ["MaxVms"] = "7" }) // stands for FIRESHARP_MAXVMS
                .AddCommandLine(["--StateDir=/srv/from-args", "--DefaultStopGraceSeconds=3", "--StopVmsOnShutdown=true", "--WorkerStartTimeoutSeconds=90"])
                .Build();
            var o = DaemonOptions.FromConfiguration(config);
            Assert.Equal("/srv/from-args", o.StateDir);
            Assert.Equal(7, o.MaxVms);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, o.SocketMode);
            Assert.Equal("kvm", o.SocketGroup);
            Assert.Equal(TimeSpan.FromSeconds(3), o.DefaultStopGrace);
            Assert.True(o.StopVmsOnShutdown);
            Assert.Equal(TimeSpan.FromSeconds(90), o.WorkerStartTimeout);
            Assert.Equal("/run/firesharp/firesharp.sock", o.Socket);
            Assert.Equal("/srv/from-args/run/x/worker.sock", o.WorkerSocket("x")); // sockets live in the VM's run directory
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("MaxVms", "many")]
    [InlineData("MaxVms", "0")]
    [InlineData("SocketMode", "rw-rw----")]
    [InlineData("StateDir", "relative")]
    [InlineData("Socket", "firesharp.sock")]
    [InlineData("LogLevel", "Chatty")]
    [InlineData("MemoryOvercommit", "-1")]
    [InlineData("StopVmsOnShutdown", "maybe")]
    [InlineData("WorkerStartTimeoutSeconds", "0")]
    [InlineData("WorkerStartTimeoutSeconds", "soon")]
    [InlineData("Seccomp", "sometimes")]
    [InlineData("SeccompTestTrigger", "reboot")]
    [InlineData("FunctionCpuShare", "half")]
    public void An_invalid_setting_is_refused_naming_its_key(string key, string value)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [key] = value }).Build();
        var e = Assert.Throws<ArgumentException>(() => DaemonOptions.FromConfiguration(config));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void Functions_get_Lambdas_CPU_share_unless_FunctionCpuShare_is_false()
    {
        Assert.True(DaemonOptions.FromConfiguration(new ConfigurationBuilder().Build()).FunctionCpuShare);
        Assert.False(DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(["--FunctionCpuShare=false"]).Build()).FunctionCpuShare);
    }

    [Fact]
    public void Seccomp_is_on_by_default_and_its_test_trigger_off_and_only_with_it()
    {
        var none = DaemonOptions.FromConfiguration(new ConfigurationBuilder().Build());
        Assert.True(none.Seccomp);
        Assert.Null(none.SeccompTestTrigger);
        var off = DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(["--Seccomp=false"]).Build());
        Assert.False(off.Seccomp);
        var trigger = DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(["--SeccompTestTrigger=socket"]).Build());
        Assert.Equal("socket", trigger.SeccompTestTrigger);
        var e = Assert.Throws<ArgumentException>(() => DaemonOptions.FromConfiguration(
            new ConfigurationBuilder().AddCommandLine(["--Seccomp=false", "--SeccompTestTrigger=execve"]).Build()));
        Assert.Contains("needs Seccomp=true", e.Message);
    }

    [Fact]
    public void A_state_dir_too_long_for_socket_paths_is_refused()
    {
        var o = new DaemonOptions { StateDir = "/" + new string('s', 90) };
        Assert.Throws<ArgumentException>(o.Validate);
        Assert.Equal(63, new DaemonOptions().MaxIdLength);
    }

    [Fact]
    public void Journald_lines_carry_the_syslog_priority()
    {
        var formatter = new JournaldFormatter(new MessageTemplateTextFormatter("{Message}{NewLine}{Exception}"));
        var writer = new StringWriter();
        var template = new MessageTemplateParser().Parse("disk {Name} failed");
        var ev = new LogEvent(DateTimeOffset.UtcNow, LogEventLevel.Error, new InvalidOperationException("boom\nsecond line"), template,
            [new LogEventProperty("Name", new ScalarValue("vda"))]);
        formatter.Format(ev, writer);
        var lines = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("<3>disk \"vda\" failed", lines[0]);
        Assert.True(lines.Length >= 3);
        Assert.All(lines, l => Assert.StartsWith("<3>", l));
        Assert.Equal(6, DaemonLogging.Priority(LogEventLevel.Information));
        Assert.Equal(4, DaemonLogging.Priority(LogEventLevel.Warning));
        Assert.Equal(7, DaemonLogging.Priority(LogEventLevel.Debug));
    }

    [Fact]
    public void Path_roots_default_to_var_lib_firesharp_always_add_the_state_dir_and_refuse_relative_ones()
    {
        static DaemonOptions From(params string[] args) => DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(args).Build());
        var d = From("--StateDir=/srv/state");
        Assert.Equal(["/var/lib/firesharp", "/srv/state"], d.PathRoots);
        Assert.False(d.AllowBlockDevices);
        var o = From("--StateDir=/srv/state", "--AllowedPathRoots=/srv/images, /data/vm", "--AllowBlockDevices=true");
        Assert.Equal(["/srv/images", "/data/vm", "/srv/state"], o.PathRoots);
        Assert.True(o.AllowBlockDevices);
        Assert.Equal(o.PathRoots, o.PathPolicy().Roots);
        var e = Assert.Throws<ArgumentException>(() => From("--AllowedPathRoots=/ok,relative/dir"));
        Assert.Contains("AllowedPathRoots='relative/dir'", e.Message);
        Assert.Throws<ArgumentException>(() => From("--AllowedPathRoots=/a/../b"));
    }
}
