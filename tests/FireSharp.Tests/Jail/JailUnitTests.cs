using FireSharp.Daemon;
using FireSharp.Daemon.Jail;
using FireSharp.Daemon.Vms;
using FireSharp.Proto.Worker;
using FireSharp.Worker;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Jail;

/// <summary>The jail's pure parts: uid allocation, the unshare command line, the worker's jail arguments, reaping.</summary>
public sealed class JailUnitTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fsj-" + Guid.NewGuid().ToString("N")[..10]);

    public JailUnitTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Uids_are_the_lowest_free_of_the_range_and_run_out()
    {
        var o = new DaemonOptions { JailUidBase = 5000, JailUidCount = 3 };
        Assert.Equal(5000u, JailIds.Allocate(o, new HashSet<uint>())!.Uid);
        var id = JailIds.Allocate(o, new HashSet<uint> { 5000, 5002 })!;
        Assert.Equal(5001u, id.Uid);
        Assert.Equal(5001u, id.Gid);
        Assert.Null(JailIds.Allocate(o, new HashSet<uint> { 5000, 5001, 5002 }));
    }

    [Fact]
    public void A_fixed_uid_is_given_to_every_vm()
    {
        var o = new DaemonOptions { JailUid = 777, JailGid = 778 };
        var id = JailIds.Allocate(o, new HashSet<uint> { 777 })!;
        Assert.Equal((777u, 778u), (id.Uid, id.Gid));
    }

    [Fact]
    public void Bad_jail_options_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new DaemonOptions { JailUidCount = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new DaemonOptions { JailUidBase = uint.MaxValue - 5, JailUidCount = 10 }.Validate());
        Assert.Throws<ArgumentException>(() => new DaemonOptions { JailUid = 0, JailGid = 5 }.Validate());
        Assert.Throws<ArgumentException>(() => new DaemonOptions { JailUid = 5 }.Validate());
        new DaemonOptions { JailUid = 5, JailGid = 5 }.Validate();
    }

    [Fact]
    public void Unshare_gets_new_namespaces_and_the_second_stage()
    {
        var args = WorkerArgs.Parse(["--jail", "/s/jail/a/plan.pb", "--socket", "/s/run/a/worker.sock", "--log", "/s/vms/a/worker.log", "--id", "a"]);
        Assert.Null(args.Error);
        var argv = JailCommand.UnshareArgv(new JailPlan(), "/bin/firesharp-vmm", args, 3, [5, -1, 7]);
        Assert.Equal(["unshare", "--fork", "--kill-child", "--pid", "--mount", "--ipc", "--uts", "--propagation", "private", "--net", "--",
            "/bin/firesharp-vmm", "--jailed", "/s/jail/a/plan.pb", "--socket", "/s/run/a/worker.sock", "--id", "a", "--log-level", "Information",
            "--ready-fd", "3", "--fds", "5,-1,7"], argv);
        // The second stage's command line parses back.
        var second = WorkerArgs.Parse(argv[(argv.IndexOf("--") + 2)..]);
        Assert.Null(second.Error);
        Assert.Equal("/s/jail/a/plan.pb", second.Jailed);
        Assert.Equal(3, second.ReadyFd);
        Assert.Equal([5, -1, 7], second.Fds);
        Assert.Null(second.Log); // stdio points at the log already
    }

    [Fact]
    public void A_given_network_namespace_is_joined_instead_of_a_new_one()
    {
        var args = WorkerArgs.Parse(["--jail", "/p", "--socket", "/s"]);
        var argv = JailCommand.UnshareArgv(new JailPlan { NetnsPath = "/run/netns/blue" }, "/w", args, -1, []);
        Assert.DoesNotContain("--net", argv);
        Assert.DoesNotContain("--ready-fd", argv);
        Assert.DoesNotContain("--fds", argv);
    }

    [Theory]
    [InlineData("--jail", "/p", "--jailed", "/p")]
    [InlineData("--fds", "3", "--socket", "/s")]
    [InlineData("--jailed", "/p", "--ready-fd", "x")]
    [InlineData("--jailed", "/p", "--fds", "3,y")]
    public void Bad_jail_arguments_are_refused(params string[] a) => Assert.NotNull(WorkerArgs.Parse([.. a, "--socket", "/s"]).Error ?? WorkerArgs.Parse(a).Error);

    [Fact]
    public void Jail_and_run_directories_of_vms_that_are_gone_are_reaped()
    {
        var options = new DaemonOptions { StateDir = _dir };
        foreach (var d in new[] { options.JailDir("live"), options.JailDir("gone"), options.RunDir("live"), options.RunDir("gone2") })
        {
            Directory.CreateDirectory(Path.Combine(d, "root", "dev"));
            File.WriteAllText(Path.Combine(d, "root", "kernel"), "");
        }
        var jails = new VmJails(options, new VmRegistry(options, new VmRecordStore(NullLogger.Instance)), new DaemonSnapshotKeys(options), NullLogger.Instance);
        jails.ReapOrphans(new HashSet<string> { "live" });
        Assert.True(Directory.Exists(options.JailDir("live")));
        Assert.True(Directory.Exists(options.RunDir("live")));
        Assert.False(Directory.Exists(options.JailDir("gone")));
        Assert.False(Directory.Exists(options.RunDir("gone2")));
        jails.Remove("live");
        Assert.False(Directory.Exists(options.JailDir("live")));
        Assert.False(Directory.Exists(options.RunDir("live")));
    }

    [Fact]
    public void A_directory_with_a_mount_under_it_is_recognised()
    {
        Assert.Equal("/proc", VmJails.MountedUnder("/proc"));
        Assert.NotNull(VmJails.MountedUnder("/"));
        Assert.Null(VmJails.MountedUnder(_dir));
    }

    [Fact]
    public void A_diff_chain_is_followed_for_the_bind_mounts()
    {
        Assert.Equal([Path.GetFullPath(_dir)], VmJails.SnapshotChain(_dir));
    }
}
