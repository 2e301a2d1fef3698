using System.Diagnostics;
using FireSharp.Daemon.Configuration;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Tests.Config;

/// <summary>
/// `make install` and `make deb` (packaging/install.sh, packaging/deb/) over stand-in binaries and guest images, the
/// maintainer scripts against a scratch root with systemctl and groupadd stubbed, and the units through
/// `systemd-analyze verify`. Nothing is installed on this machine.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PackagingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fs-pkg-" + Guid.NewGuid().ToString("N")[..8]);
    private static string Packaging => Path.Combine(TestPaths.RepoRoot, "packaging");

    public PackagingTests()
    {
        Directory.CreateDirectory(_dir);
        foreach (var f in (string[])["firesharp", "firesharp-vmm", "vmlinux", "rootfs.ext4"])
            File.WriteAllText(Path.Combine(_dir, f), "stand-in " + f);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Dictionary<string, string> Inputs() => new()
    {
        ["BIN"] = Path.Combine(_dir, "firesharp"),
        ["WORKER_BIN"] = Path.Combine(_dir, "firesharp-vmm"),
        ["KERNEL"] = Path.Combine(_dir, "vmlinux"),
        ["ROOTFS"] = Path.Combine(_dir, "rootfs.ext4"),
    };

    private static (int Code, string Out, string Err) Run(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, string? cwd = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = cwd ?? TestPaths.RepoRoot };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), $"{file} did not finish");
        return (p.ExitCode, stdout.Result, err);
    }

    private static LoadedConfiguration LoadJson(string file) => DaemonConfiguration.Load(new ConfigurationBuilder().AddJsonFile(file).Build());

    [Fact]
    public void Install_stages_binaries_units_images_and_a_config_that_points_functions_at_the_images()
    {
        string dest = Path.Combine(_dir, "dest");
        var env = Inputs();
        env["DESTDIR"] = dest;
        env["PREFIX"] = "/opt/fs";
        var (code, _, err) = Run("sh", [Path.Combine(Packaging, "install.sh")], env);
        Assert.True(code == 0, err);
        foreach (var f in (string[])["opt/fs/bin/firesharp", "opt/fs/bin/firesharp-vmm", "opt/fs/lib/firesharp/vmlinux", "opt/fs/lib/firesharp/rootfs.ext4",
                     "etc/systemd/system/firesharp.service", "etc/systemd/system/firesharp.socket", "etc/firesharp/config.json"])
            Assert.True(File.Exists(Path.Combine(dest, f)), f + " was not installed");
        Assert.Contains("ExecStart=/opt/fs/bin/firesharp serve", File.ReadAllText(Path.Combine(dest, "etc/systemd/system/firesharp.service")));

        // The config: valid, and its function defaults are the installed images, inside the path policy's roots.
        var loaded = LoadJson(Path.Combine(dest, "etc/firesharp/config.json"));
        Assert.True(loaded.Ok, string.Join("; ", loaded.Problems));
        var o = loaded.Options!;
        Assert.Equal("/opt/fs/lib/firesharp/vmlinux", o.FunctionKernel);
        Assert.Equal("/opt/fs/lib/firesharp/rootfs.ext4", o.FunctionRootfs);
        Assert.NotNull(o.PathPolicy().Locate(o.FunctionKernel!));
        Assert.NotNull(o.PathPolicy().Locate(o.FunctionRootfs!));

        // A second install keeps the config the admin may have edited.
        File.WriteAllText(Path.Combine(dest, "etc/firesharp/config.json"), """{ "MaxVms": 3 }""");
        (code, var stdout, _) = Run("sh", [Path.Combine(Packaging, "install.sh")], env);
        Assert.Equal(0, code);
        Assert.Contains("kept", stdout);
        Assert.Equal("""{ "MaxVms": 3 }""", File.ReadAllText(Path.Combine(dest, "etc/firesharp/config.json")));
    }

    [Fact]
    public void Install_refuses_without_the_guest_images()
    {
        var env = Inputs();
        env["DESTDIR"] = Path.Combine(_dir, "dest");
        env["KERNEL"] = Path.Combine(_dir, "no-vmlinux");
        var (code, _, err) = Run("sh", [Path.Combine(Packaging, "install.sh")], env);
        Assert.NotEqual(0, code);
        Assert.Contains("no-vmlinux is missing", err);
    }

    [Fact]
    public void The_deb_holds_the_binaries_units_config_images_and_maintainer_scripts()
    {
        string deb = Path.Combine(_dir, "out", "firesharp_9.8.7_amd64.deb");
        var env = Inputs();
        env["VERSION"] = "9.8.7";
        var (code, _, err) = Run("sh", [Path.Combine(Packaging, "deb", "build-deb.sh"), deb], env);
        Assert.True(code == 0, err);

        var (_, contents, _) = Run("dpkg-deb", ["-c", deb]);
        foreach (var f in (string[])["./usr/bin/firesharp", "./usr/bin/firesharp-vmm", "./lib/systemd/system/firesharp.service", "./lib/systemd/system/firesharp.socket",
                     "./etc/firesharp/config.json", "./usr/lib/firesharp/vmlinux", "./usr/lib/firesharp/rootfs.ext4", "./usr/share/doc/firesharp/getting-started.md"])
            Assert.Contains(f, contents);
        Assert.Contains("-rwxr-xr-x root/root", contents.Split('\n').Single(l => l.EndsWith("./usr/bin/firesharp", StringComparison.Ordinal)));
        Assert.DoesNotContain("/usr/local", contents);

        var (_, info, _) = Run("dpkg-deb", ["-I", deb]);
        Assert.Contains("Package: firesharp", info);
        Assert.Contains("Version: 9.8.7", info);
        Assert.Contains("Architecture: amd64", info);
        Assert.Contains("libseccomp2", info);
        foreach (var s in (string[])["postinst", "prerm", "postrm", "conffiles"]) Assert.Contains(s, info);

        string control = Path.Combine(_dir, "control"), tree = Path.Combine(_dir, "tree");
        Assert.Equal(0, Run("dpkg-deb", ["-e", deb, control]).Code);
        Assert.Equal("/etc/firesharp/config.json", File.ReadAllText(Path.Combine(control, "conffiles")).Trim());
        foreach (var s in (string[])["postinst", "prerm", "postrm"])
        {
            var (lint, _, lintErr) = Run("sh", ["-n", Path.Combine(control, s)]);
            Assert.True(lint == 0, $"{s}: {lintErr}");
        }
        Assert.Equal(0, Run("dpkg-deb", ["-x", deb, tree]).Code);
        var o = LoadJson(Path.Combine(tree, "etc/firesharp/config.json")).Options!;
        Assert.Equal("/usr/lib/firesharp/vmlinux", o.FunctionKernel);
        Assert.NotNull(o.PathPolicy().Locate("/usr/lib/firesharp/rootfs.ext4"));
        Assert.Contains("ExecStart=/usr/bin/firesharp serve", File.ReadAllText(Path.Combine(tree, "lib/systemd/system/firesharp.service")));
    }

    /// <summary>Runs a maintainer script with DPKG_ROOT=<paramref name="root"/> and systemctl/groupadd stubs that log their arguments.</summary>
    private string[] RunScript(string root, string script, params string[] args)
    {
        string stubs = Path.Combine(_dir, "stubs"), log = Path.Combine(_dir, "calls.log");
        Directory.CreateDirectory(stubs);
        foreach (var tool in (string[])["systemctl", "groupadd", "getent"])
        {
            string stub = Path.Combine(stubs, tool);
            File.WriteAllText(stub, $"#!/bin/sh\necho \"{tool} $*\" >> '{log}'\n{(tool == "getent" ? "exit 2" : "exit 0")}\n");
            File.SetUnixFileMode(stub, (UnixFileMode)0b111_101_101);
        }
        File.Delete(log);
        var env = new Dictionary<string, string> { ["DPKG_ROOT"] = root, ["PATH"] = stubs + ":" + Environment.GetEnvironmentVariable("PATH") };
        var (code, _, err) = Run("sh", [Path.Combine(Packaging, "deb", script), .. args], env);
        Assert.True(code == 0, $"{script} {string.Join(' ', args)}: {err}");
        return File.Exists(log) ? File.ReadAllLines(log) : [];
    }

    [Fact]
    public void Maintainer_scripts_make_the_group_and_dirs_enable_start_stop_and_purge()
    {
        string root = Path.Combine(_dir, "root");
        Directory.CreateDirectory(Path.Combine(root, "etc"));
        File.WriteAllText(Path.Combine(root, "etc/group"), "root:x:0:\n");
        Directory.CreateDirectory(Path.Combine(root, "run/systemd/system")); // systemd runs in this root

        var calls = RunScript(root, "postinst", "configure", "");
        Assert.Equal([$"groupadd --system --prefix {root} firesharp", "systemctl daemon-reload", "systemctl enable firesharp.socket firesharp.service",
            "systemctl start firesharp.socket", "systemctl start firesharp.service"], calls);
        Assert.Equal((UnixFileMode)0b111_000_000, File.GetUnixFileMode(Path.Combine(root, "var/lib/firesharp")));
        Assert.True(Directory.Exists(Path.Combine(root, "var/log/firesharp")));

        // An upgrade restarts the daemon (its VMs live on); the group is there already.
        File.AppendAllText(Path.Combine(root, "etc/group"), "firesharp:x:998:\n");
        calls = RunScript(root, "postinst", "configure", "0.0.9");
        Assert.DoesNotContain(calls, c => c.StartsWith("groupadd", StringComparison.Ordinal));
        Assert.Contains("systemctl restart firesharp.service", calls);

        Assert.Empty(RunScript(root, "prerm", "upgrade", "0.2.0"));
        Assert.Equal(["systemctl stop firesharp.service firesharp.socket", "systemctl disable firesharp.service firesharp.socket"], RunScript(root, "prerm", "remove"));
        Assert.Equal(["systemctl daemon-reload"], RunScript(root, "postrm", "remove"));

        Directory.CreateDirectory(Path.Combine(root, "etc/firesharp"));
        File.WriteAllText(Path.Combine(root, "var/lib/firesharp/vm.pb"), "state");
        RunScript(root, "postrm", "purge");
        Assert.False(Directory.Exists(Path.Combine(root, "var/lib/firesharp")));
        Assert.False(Directory.Exists(Path.Combine(root, "etc/firesharp")));
        Assert.True(File.Exists(Path.Combine(root, "etc/group")));

        // Without systemd in the root (a chroot being built) nothing asks systemctl.
        Directory.Delete(Path.Combine(root, "run"), recursive: true);
        Assert.DoesNotContain(RunScript(root, "postinst", "configure", ""), c => c.StartsWith("systemctl", StringComparison.Ordinal));
        Assert.Empty(RunScript(root, "prerm", "remove"));
    }

    [SkippableFact]
    public void The_units_pass_systemd_analyze_verify_and_carry_the_hardening()
    {
        Skip.If(!File.Exists("/usr/bin/systemd-analyze") && !File.Exists("/bin/systemd-analyze"), "systemd-analyze is not installed (Debian package systemd)");
        string units = Path.Combine(_dir, "units");
        Directory.CreateDirectory(units);
        string service = File.ReadAllText(Path.Combine(Packaging, "firesharp.service"));
        // verify insists that ExecStart's binary exists: any executable stands in.
        File.WriteAllText(Path.Combine(units, "firesharp.service"), service.Replace("/usr/local/bin/firesharp", "/bin/true", StringComparison.Ordinal));
        File.Copy(Path.Combine(Packaging, "firesharp.socket"), Path.Combine(units, "firesharp.socket"));
        var (code, stdout, err) = Run("systemd-analyze", ["verify", "--man=no", Path.Combine(units, "firesharp.service"), Path.Combine(units, "firesharp.socket")]);
        Assert.True(code == 0 && (stdout + err).Trim().Length == 0, $"systemd-analyze verify: {stdout}{err}");

        // It does complain about a broken unit (so the check above can fail).
        File.WriteAllText(Path.Combine(units, "firesharp.service"), service.Replace("/usr/local/bin/firesharp", "/bin/true", StringComparison.Ordinal)
            .Replace("DeviceAllow=/dev/kvm rwm", "DeviceAllow=/dev/kvm rwz", StringComparison.Ordinal));
        (_, stdout, err) = Run("systemd-analyze", ["verify", "--man=no", Path.Combine(units, "firesharp.service")]);
        Assert.Contains("Invalid device rights", stdout + err);

        foreach (var line in (string[])["ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "DevicePolicy=closed", "DeviceAllow=/dev/kvm rwm",
                     "DeviceAllow=/dev/net/tun rw", "NoNewPrivileges=yes", "RuntimeDirectoryPreserve=yes", "Wants=firesharp.socket"])
            Assert.Contains(line + "\n", service);
        string socket = File.ReadAllText(Path.Combine(Packaging, "firesharp.socket"));
        Assert.Contains("ListenStream=/run/firesharp/firesharp.sock\n", socket);
        Assert.Contains("SocketGroup=firesharp\n", socket);
        Assert.Contains("SocketMode=0660\n", socket);
    }

    /// <summary>The unit's CapabilityBoundingSet, as setpriv(1) takes it (the capability test in ConfigCliTests runs the daemon under it).</summary>
    internal static string BoundingSetForSetpriv()
    {
        string line = File.ReadLines(Path.Combine(Packaging, "firesharp.service")).Single(l => l.StartsWith("CapabilityBoundingSet=", StringComparison.Ordinal));
        var caps = line["CapabilityBoundingSet=".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.NotEmpty(caps);
        return "-all," + string.Join(',', caps.Select(c => "+" + c["CAP_".Length..].ToLowerInvariant()));
    }
}
