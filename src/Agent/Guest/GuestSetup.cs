using FireSharp.Agent.Processes;
using FireSharp.Agent.Protocol;
using FireSharp.Proto.Agent;
using Tmds.Linux;

namespace FireSharp.Agent.Guest;

/// <summary>
/// What the agent does to the guest before it serves: the base file systems (when it is PID 1),
/// the hostname, the network and the extra drives from the command line. Every step is
/// best-effort: a failure becomes a warning (reported in Ready) and the agent still serves.
/// </summary>
internal sealed class GuestSetup(IGuestSystem system, ChildReaper reaper)
{
    private static readonly ulong NoSuid = (ulong)LibC.MS_NOSUID, NoDev = (ulong)LibC.MS_NODEV, NoExec = (ulong)LibC.MS_NOEXEC, ReadOnly = (ulong)LibC.MS_RDONLY;

    /// <summary>The base mounts, in order: (source, target, type, flags, data).</summary>
    private static readonly (string Source, string Target, string Type, ulong Flags, string? Data)[] BaseMounts =
    [
        ("proc", "/proc", "proc", NoSuid | NoDev | NoExec, null),
        ("sysfs", "/sys", "sysfs", NoSuid | NoDev | NoExec, null),
        ("devtmpfs", "/dev", "devtmpfs", NoSuid, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", NoSuid | NoExec, "mode=0620,ptmxmode=0666"),
        ("tmpfs", "/dev/shm", "tmpfs", NoSuid | NoDev, "mode=1777"),
        ("tmpfs", "/tmp", "tmpfs", NoSuid | NoDev, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", NoSuid | NoDev, "mode=0755"),
    ];

    public List<string> Warnings { get; } = [];
    public List<MountResult> ExtraMounts { get; } = [];

    /// <summary>
    /// Mounts proc, sys, dev (+pts, shm), tmp and run, skipping any that is mounted already
    /// (/init mounts them when the agent is started from start.d).
    /// </summary>
    public void MountBaseFileSystems()
    {
        var mounted = MountPoints();
        foreach (var (source, target, type, flags, data) in BaseMounts)
        {
            if (mounted.Contains(target)) continue;
            try
            {
                Directory.CreateDirectory(target);
                system.Mount(source, target, type, flags, data);
                if (target == "/proc") mounted = MountPoints();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Warn(e.Message);
            }
        }
    }

    /// <summary>Targets in /proc/self/mountinfo (field 5); empty if /proc is not mounted.</summary>
    public static HashSet<string> MountPoints()
    {
        var result = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            {
                var fields = line.Split(' ');
                if (fields.Length > 4) result.Add(fields[4].Replace("\\040", " "));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return result;
    }

    public void SetHostname(string? hostname)
    {
        if (hostname is null) return;
        try { system.SetHostname(hostname); }
        catch (IOException e) { Warn(e.Message); }
    }

    private static readonly string[] LoopbackUp = ["ip", "link", "set", "lo", "up"];

    /// <summary>firesharp.ip / firesharp.dns through busybox ip (the kernel's ip= needs nothing).</summary>
    public async Task ConfigureNetworkAsync(AgentBootConfig config)
    {
        if (config.Address is { } address)
        {
            var commands = new List<string[]>
            {
                LoopbackUp,
                new[] { "ip", "link", "set", config.NetDevice, "up" },
                new[] { "ip", "addr", "add", address, "dev", config.NetDevice },
            };
            if (config.Gateway is { } gateway) commands.Add(["ip", "route", "add", "default", "via", gateway, "dev", config.NetDevice]);
            foreach (var argv in commands)
            {
                if (!system.IsReal) { Log.Info("fake " + string.Join(' ', argv)); continue; }
                try
                {
                    var (status, output) = await CommandRunner.RunAsync(reaper, argv, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
                    if (status.ExitCode != 0) { Warn($"{string.Join(' ', argv)}: {status} {output}"); break; }
                }
                catch (SpawnException e) { Warn($"{string.Join(' ', argv)}: {e.Message}"); break; }
            }
        }
        if (config.Dns.Count > 0 && system.IsReal)
        {
            try { File.WriteAllText("/etc/resolv.conf", string.Concat(config.Dns.Select(d => $"nameserver {d}\n"))); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Warn($"/etc/resolv.conf: {e.Message}"); }
        }
    }

    /// <summary>Mounts the extra drives in order; waits up to 2 s for each device node to appear.</summary>
    public async Task MountExtraDrivesAsync(IReadOnlyList<AgentMount> mounts)
    {
        foreach (var m in mounts)
        {
            var result = new MountResult { Source = m.Source, Target = m.Target, Fstype = m.FsType, ReadOnly = m.ReadOnly };
            try
            {
                if (system.IsReal)
                {
                    for (int i = 0; i < 100 && !File.Exists(m.Source); i++) await Task.Delay(20).ConfigureAwait(false);
                    Directory.CreateDirectory(m.Target);
                }
                system.Mount(m.Source, m.Target, m.FsType, m.ReadOnly ? ReadOnly : 0, null);
                Log.Info($"mounted {m}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                result.Error = e.Message;
                Warn(e.Message);
            }
            ExtraMounts.Add(result);
        }
    }

    /// <summary>For shutdown: sync, unmount the extra drives (last first), sync again.</summary>
    public void UnmountExtraDrives()
    {
        system.Sync();
        for (int i = ExtraMounts.Count - 1; i >= 0; i--)
        {
            if (ExtraMounts[i].Error.Length != 0) continue;
            try { system.Unmount(ExtraMounts[i].Target); }
            catch (IOException e) { Log.Error(e.Message); }
        }
        system.Sync();
    }

    private void Warn(string message)
    {
        Warnings.Add(message);
        Log.Error(message);
    }
}
