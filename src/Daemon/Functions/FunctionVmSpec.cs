using System.Security.Cryptography;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Functions.Lambda;
using FireSharp.Daemon.Vms;
using FireSharp.Pool;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// What a function's VM is, apart from how <see cref="AgentFunctionVmFactory"/> brings it up: its VM config
/// (kernel, drives and the agent's mounts), its labels, its id, and where the snapshot of its version lives.
/// Pure functions of the <see cref="FunctionDefinition"/> (and the daemon's directories and limits).
/// </summary>
internal static class FunctionVmSpec
{
    /// <summary>The label that marks a function's VM (its value is the function's name).</summary>
    public const string FunctionLabel = "firesharp.function";

    /// <summary>The label with the function version a VM runs.</summary>
    public const string VersionLabel = "firesharp.function.version";

    /// <summary>The VM: kernel, root filesystem, layers and code as read-only drives; the agent; memory and vCPUs of the function.</summary>
    public static VmConfig Config(FunctionDefinition f)
    {
        f = Resolved(f);
        var drives = new List<DriveConfig> { new("rootfs", f.RootfsPath) { ReadOnly = true, Root = true } };
        var mounts = new List<AgentMount>();
        if (f.LayerPaths.Count > 1) mounts.Add(new AgentMount("/dev/null", "/opt", ReadOnly: false, FsType: "tmpfs"));
        for (int i = 0; i < f.LayerPaths.Count; i++)
        {
            drives.Add(new DriveConfig($"layer{i + 1}", f.LayerPaths[i]) { ReadOnly = true });
            mounts.Add(new AgentMount(DevicePath(i + 1), f.LayerPaths.Count == 1 ? "/opt" : $"/opt/layer{i + 1}"));
        }
        drives.Add(new DriveConfig("code", f.CodeImagePath) { ReadOnly = true });
        mounts.Add(new AgentMount(DevicePath(f.LayerPaths.Count + 1), "/var/task"));
        return new VmConfig
        {
            Kernel = new KernelConfig(f.KernelPath)
            {
                Cmdline = FireSharp.Vm.MicroVm.DefaultLinuxCmdline + " " + new AgentBootConfig { Start = false, Mounts = mounts }.ToCmdline(),
            },
            Vcpus = f.Vcpus,
            MemMib = f.MemoryMib,
            CpuQuotaMillicpus = LambdaResources.CpuQuotaMillicpus(f.MemoryMib),
            Drives = drives,
            Agent = true,
        };
    }

    /// <summary>The labels of a function's VM: the function and its version.</summary>
    public static Dictionary<string, string> Labels(FunctionDefinition f) =>
        new(StringComparer.Ordinal) { [FunctionLabel] = f.Name, [VersionLabel] = f.Version };

    /// <summary>
    /// The definition with symbolic links in its image paths resolved (build/guest/rootfs.ext4 is a link into the
    /// cache): a snapshot records drive paths and sizes, and a link would be checked instead of its target.
    /// </summary>
    public static FunctionDefinition Resolved(FunctionDefinition f) => f with
    {
        KernelPath = RealPath(f.KernelPath),
        RootfsPath = RealPath(f.RootfsPath),
        CodeImagePath = RealPath(f.CodeImagePath),
        LayerPaths = [.. f.LayerPaths.Select(RealPath)],
    };

    private static string RealPath(string path)
    {
        try
        {
            return new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path;
        }
        catch (IOException)
        {
            return path;
        }
    }

    /// <summary>The n-th virtio-blk drive (0-based, in spec order) is /dev/vda, vdb, ...</summary>
    private static string DevicePath(int index) => "/dev/vd" + (char)('a' + index);

    /// <summary>
    /// Where this version's snapshot lives. The key includes a hash of everything that shapes the initialized VM,
    /// so a snapshot of an earlier daemon's version with the same number is never used for different code.
    /// </summary>
    public static string SnapshotDir(FunctionDefinition f, string functionsDir)
    {
        var sb = new StringBuilder();
        sb.Append(f.KernelPath).Append('\0').Append(f.RootfsPath).Append('\0').Append(f.CodeImagePath).Append('\0').Append(f.Handler).Append('\0')
          .Append(f.MemoryMib).Append('\0').Append(f.Vcpus).Append('\0');
        foreach (var l in f.LayerPaths) sb.Append(l).Append('\0');
        foreach (var (k, v) in f.Environment.OrderBy(e => e.Key, StringComparer.Ordinal)) sb.Append(k).Append('=').Append(v).Append('\0');
        foreach (var p in (string[])[f.KernelPath, f.RootfsPath, f.CodeImagePath, .. f.LayerPaths])
        {
            try { sb.Append(File.GetLastWriteTimeUtc(p).Ticks).Append('\0'); }
            catch (IOException) { }
        }
        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())))[..12];
        return Path.Combine(functionsDir, f.Name, "snapshots", $"{f.Version}-{hash}");
    }

    /// <summary>fn-&lt;name, lowercased&gt;-&lt;random&gt;, within the daemon's id length.</summary>
    public static string NewVmId(string name, int maxIdLength)
    {
        string suffix = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var clean = new string([.. name.ToLowerInvariant().Select(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_' ? c : '-')]);
        int room = Math.Max(0, maxIdLength - 3 - 1 - suffix.Length);
        if (clean.Length > room) clean = clean[..room];
        return clean.Length == 0 ? $"fn-{suffix}" : $"fn-{clean}-{suffix}";
    }
}
