using FireSharp.Daemon;
using FireSharp.Daemon.Configuration;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Tests.Config;

/// <summary>The daemon's configuration: unknown keys with a suggestion, every problem reported, and where each value comes from.</summary>
public sealed class DaemonSettingsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fs-settings-" + Guid.NewGuid().ToString("N")[..8]);

    public DaemonSettingsTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static LoadedConfiguration FromArgs(params string[] args) => DaemonConfiguration.Load(new ConfigurationBuilder().AddCommandLine(args).Build());

    private string WriteJson(string json)
    {
        string file = Path.Combine(_dir, "config.json");
        File.WriteAllText(file, json);
        return file;
    }

    [Fact]
    public void An_unknown_command_line_key_is_an_error_with_the_nearest_key()
    {
        var loaded = FromArgs("--MaxVm=5");
        Assert.False(loaded.Ok);
        Assert.Equal(["unknown setting --MaxVm (did you mean --MaxVms?)"], loaded.Problems);
        Assert.Contains("did you mean --LogLevel?", Assert.Single(FromArgs("--loglvel=Debug").Problems));
        // Nothing near: no suggestion, still an error.
        Assert.Equal(["unknown setting --Colour"], FromArgs("--Colour=blue").Problems);
    }

    [Fact]
    public void An_unknown_key_in_the_config_file_names_the_file()
    {
        string file = WriteJson("""{ "MaxVm": 5, "StateDir": "/srv/fs", "Sokcet": "/run/x.sock" }""");
        var loaded = DaemonConfiguration.Load(new ConfigurationBuilder().AddJsonFile(file).Build());
        Assert.Equal(2, loaded.Problems.Count);
        Assert.Contains($"unknown setting MaxVm in file {file} (did you mean MaxVms?)", loaded.Problems);
        Assert.Contains($"unknown setting Sokcet in file {file} (did you mean Socket?)", loaded.Problems);
    }

    [Fact]
    public void A_single_value_key_given_as_a_section_is_an_error_and_lists_take_arrays_or_commas()
    {
        string file = WriteJson("""{ "MaxVms": { "Count": 5 }, "AllowedPathRoots": ["/srv/a", "/srv/b"] }""");
        var problem = Assert.Single(DaemonConfiguration.Load(new ConfigurationBuilder().AddJsonFile(file).Build()).Problems);
        Assert.Contains("MaxVms is a single value, not a section", problem);
        file = WriteJson("""{ "AllowedPathRoots": ["/srv/a", "/srv/b"] }""");
        Assert.Equal(["/srv/a", "/srv/b", "/var/lib/firesharp"], DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddJsonFile(file).Build()).PathRoots);
        Assert.Equal(["/srv/c", "/srv/d", "/var/lib/firesharp"], FromArgs("--AllowedPathRoots=/srv/c, /srv/d").Options!.PathRoots);
    }

    [Fact]
    public void Every_problem_is_reported_once_on_its_own_line_naming_its_key()
    {
        var loaded = FromArgs("--MaxVms=many", "--LogLevel=Chatty", "--SocketMode=rw", "--Cgroups=Sometimes", "--VmPidsAllowance=3", "--StateDir=relative");
        Assert.False(loaded.Ok);
        Assert.Equal(
            ["MaxVms='many' must be a whole number"],
            loaded.Problems); // a value of the wrong type stops before binding: the rest is checked once it binds
        loaded = FromArgs("--MaxVms=0", "--LogLevel=Chatty", "--SocketMode=rw", "--Cgroups=Sometimes", "--VmPidsAllowance=3", "--StateDir=relative");
        Assert.True(loaded.Problems.Count == 6, string.Join("\n", loaded.Problems));
        foreach (var key in (string[])["MaxVms", "LogLevel", "SocketMode", "Cgroups", "VmPidsAllowance", "StateDir"])
            Assert.Single(loaded.Problems, p => p.StartsWith(key + "=", StringComparison.Ordinal));
        Assert.Contains("MaxVms='0' must be 1 to 1000000", loaded.Problems); // the data annotation's line
        Assert.All(loaded.Problems, p => Assert.DoesNotContain('\n', p));
        var e = Assert.Throws<ArgumentException>(() => DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(["--MaxVms=0", "--LogLevel=Chatty"]).Build()));
        Assert.Equal(2, e.Message.Split('\n').Length);
    }

    [Fact]
    public void Values_bind_to_the_options_and_defaults_stay()
    {
        var o = FromArgs("--MaxVms=12", "--SocketMode=0600", "--Jail=false", "--JailUid=1000", "--JailGid=1000", "--CgroupIoWeight=200",
            "--MetricsListen=off", "--FunctionKernel=/usr/lib/firesharp/vmlinux", "--Cgroups=off", "--TlsClients=a=viewer,b=admin").Options!;
        Assert.Equal(12, o.MaxVms);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, o.SocketMode);
        Assert.False(o.Jail);
        Assert.Equal(1000u, o.JailUid);
        Assert.Equal(200, o.CgroupIoWeight);
        Assert.Null(o.MetricsListen);
        Assert.Equal("/usr/lib/firesharp/vmlinux", o.FunctionKernel);
        Assert.Equal(Daemon.Isolation.CgroupMode.Off, o.Cgroups);
        Assert.Equal(2, o.TlsClients.Count);
        var d = FromArgs().Options!;
        var defaults = new DaemonOptions();
        Assert.Equal(defaults.MaxVms, d.MaxVms);
        Assert.Equal(defaults.SocketMode, d.SocketMode);
        Assert.Equal(defaults.WorkerStartTimeout, d.WorkerStartTimeout);
        Assert.Equal(defaults.MetricsListen, d.MetricsListen);
        Assert.Null(d.Jail);
        Assert.Null(d.AllowedPathRoots);
    }

    [Fact]
    public void A_json_null_leaves_the_default()
    {
        string file = WriteJson("""{ "TcpListen": null, "MaxVms": null, "Jail": null, "LogJsonFile": null }""");
        var loaded = DaemonConfiguration.Load(new ConfigurationBuilder().AddJsonFile(file).Build());
        Assert.True(loaded.Ok, string.Join("; ", loaded.Problems));
        Assert.Equal(256, loaded.Options!.MaxVms);
        Assert.Null(loaded.Options.TcpListen);
    }

    [Fact]
    public void The_packaged_example_config_is_valid()
    {
        foreach (var name in (string[])["config.example.json", "config.install.json"])
        {
            var root = new ConfigurationBuilder().AddJsonFile(Path.Combine(TestPaths.RepoRoot, "packaging", name)).Build();
            var loaded = DaemonConfiguration.Load(root);
            Assert.True(loaded.Ok, name + ": " + string.Join("; ", loaded.Problems));
        }
    }

    [Fact]
    public void Show_names_each_values_source_the_last_one_winning()
    {
        string file = WriteJson("""{ "StateDir": "/srv/from-file", "MaxVms": 5 }""");
        var root = new ConfigurationBuilder().AddJsonFile(file).AddCommandLine(["--MaxVms=7"]).Build();
        var loaded = DaemonConfiguration.Load(root);
        var rows = DaemonConfiguration.Sources(root, loaded.Settings!).ToDictionary(r => r.Key.Name);
        Assert.Equal(SettingKeys.All.Count, rows.Count);
        Assert.Equal(("7", "command line (--MaxVms)"), (rows["MaxVms"].Value, rows["MaxVms"].Source));
        Assert.Equal(("/srv/from-file", "file " + file), (rows["StateDir"].Value, rows["StateDir"].Source));
        Assert.Equal(("/run/firesharp/firesharp.sock", "default"), (rows["Socket"].Value, rows["Socket"].Source));
        Assert.Equal(("0660", "default"), (rows["SocketMode"].Value, rows["SocketMode"].Source));
        Assert.Equal(("30", "default"), (rows["WorkerStartTimeoutSeconds"].Value, rows["WorkerStartTimeoutSeconds"].Source));
        Assert.Null(rows["TcpListen"].Value);
        Assert.Null(rows["AllowedPathRoots"].Value); // an empty list shows as unset
    }

    [Theory]
    [InlineData("MaxVm", "MaxVms")]
    [InlineData("maxvm", "MaxVms")]
    [InlineData("SOCKETGRUOP", "SocketGroup")]
    [InlineData("StateDri", "StateDir")]
    [InlineData("Cache", null)]
    [InlineData("REQUIRE_KVM", null)]
    [InlineData("Colour", null)]
    public void Suggestions_come_from_the_edit_distance(string typo, string? expected) => Assert.Equal(expected, SettingKeys.Suggest(typo));

    [Fact]
    public void Edit_distance_counts_insertions_deletions_substitutions_and_swaps()
    {
        Assert.Equal(0, SettingKeys.EditDistance("MaxVms", "MaxVms"));
        Assert.Equal(1, SettingKeys.EditDistance("MaxVm", "MaxVms"));
        Assert.Equal(1, SettingKeys.EditDistance("MaxVns", "MaxVms"));
        Assert.Equal(1, SettingKeys.EditDistance("MaxVsm", "MaxVms"));
        Assert.Equal(3, SettingKeys.EditDistance("kitten", "sitting"));
        Assert.Equal(6, SettingKeys.EditDistance("", "MaxVms"));
    }

    [Fact]
    public void Every_settings_key_is_documented_in_the_serve_help_or_the_packaging_readme()
    {
        string readme = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "packaging", "README.md"));
        Assert.All(SettingKeys.All, k => Assert.Contains(k.Name, readme));
    }

    [Theory]
    [InlineData("4242", "1", 4242, 3)]
    [InlineData("4242", "2", 4242, 3)]
    [InlineData("4243", "1", 4242, null)]
    [InlineData("4242", "0", 4242, null)]
    [InlineData(null, null, 4242, null)]
    [InlineData("x", "1", 4242, null)]
    public void Socket_activation_takes_fd_3_only_when_the_fds_are_this_processs(string? pid, string? fds, int self, int? expected) =>
        Assert.Equal(expected, Daemon.Hosting.SocketActivation.ListenFd(pid, fds, self));
}
