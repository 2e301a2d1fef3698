using FireSharp.Devices;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.RateLimiting;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Devices.Virtio.Rng;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

using Target = FireSharp.Devices.RateLimiting.RateLimiterTarget;
using WireTarget = FireSharp.Proto.Worker.RateLimiterTarget;

/// <summary>
/// The worker protocol's machine (worker.proto <c>CreateMachine</c>, <c>RestoreMachine</c>) in the VMM's terms,
/// a snapshot's result in the protocol's, and the VMM's device errors in the API's: the one place where the
/// wire's device fields meet device configs. A new device kind adds its field to each side here; the worker
/// itself never looks at device kinds.
/// </summary>
internal static class MachineSpecs
{
    public static VmSpec ToVmSpec(CreateMachine c, ISerialSink console, ILogger logger) => new()
    {
        KernelPath = c.KernelPath,
        InitrdPath = c.InitrdPath.Length == 0 ? null : c.InitrdPath,
        Cmdline = c.HasCmdline ? c.Cmdline : null,
        MemoryMib = c.MemMib,
        Vcpus = c.Vcpus,
        PreferPvh = c.PreferPvh,
        Serial = console,
        Logger = logger,
        Devices = Devices(c),
    };

    /// <summary>What a restore (worker.proto <c>RestoreMachine</c>) changes about the snapshotted machine.</summary>
    public static RestoreOverrides ToRestoreOverrides(RestoreMachine r, ISerialSink console, ILogger logger) => new()
    {
        Resume = !r.Paused,
        Serial = console,
        Logger = logger,
        DrivePaths = r.DrivePaths.ToDictionary(kv => kv.Key, kv => kv.Value),
        VsockUdsPath = r.VsockPath.Length == 0 ? null : r.VsockPath,
        Keys = KeysFor(r),
    };

    /// <summary>
    /// The daemon's snapshot keys from a restore request: an unjailed worker verifies the snapshot with them itself.
    /// A jailed worker gets none (it must not be able to forge a MAC): its jailer verified the files and handed them
    /// over open (null here). A worker never restores an unauthenticated snapshot: neither keys nor verified files,
    /// or a malformed key, is Unauthenticated before anything is read.
    /// </summary>
    public static SnapshotKeys? KeysFor(RestoreMachine r)
    {
        if (r.Keys.Count == 0 && SnapshotFiles.IsPreopened(r.Dir)) return null;
        if (r.Keys.Count == 0)
            throw new SnapshotException(SnapshotErrorReason.Unauthenticated, $"cannot restore {r.Dir}: the daemon sent no snapshot keys and the jailer handed over no verified snapshot");
        try
        {
            return new SnapshotKeys(r.Keys.Select(k => new FireSharp.Snapshot.SnapshotKey(k.Id, k.Key.ToByteArray())));
        }
        catch (ArgumentException e)
        {
            throw new SnapshotException(SnapshotErrorReason.Unauthenticated, $"cannot restore {r.Dir}: bad snapshot key: {e.Message}", e);
        }
    }

    /// <summary>What a snapshot wrote, as the reply to <c>TakeSnapshot</c>, with the status after it.</summary>
    public static SnapshotTaken ToWire(SnapshotResult result, WorkerStatus status) => new()
    {
        Status = status,
        Dir = result.Directory,
        MemoryBytes = result.MemoryBytes,
        MemoryBytesWritten = result.MemoryBytesWritten,
        StateFileBytes = result.StateFileBytes,
        DurationMs = result.Elapsed.TotalMilliseconds,
        PausedMs = result.PausedFor.TotalMilliseconds,
        BaseDir = result.BaseDirectory ?? "",
        DiffPages = (uint)(result.DiffPages ?? 0),
    };

    private static List<IDeviceConfig> Devices(CreateMachine c)
    {
        var devices = new List<IDeviceConfig>();
        devices.AddRange(c.Drives.Select(d => new DriveSpec
        {
            Id = d.Id.Length == 0 ? null : d.Id, Path = d.Path, ReadOnly = d.ReadOnly, IsRoot = d.Root, RateLimiter = FromWire(d.RateLimiter),
        }));
        if (c.VsockPath.Length > 0) devices.Add(new VsockDeviceSpec(c.VsockCid, c.VsockPath));
        devices.AddRange(c.Nics.Select(n => new NetworkInterfaceSpec
        {
            Id = n.Id,
            TapName = n.Tap.Length == 0 ? null : n.Tap,
            Mac = n.Mac.Length == 0 ? null : n.Mac,
            Ipv4 = n.Ip.Length == 0 ? null : NetIpv4Config.Parse(n.Ip),
            RxRateLimiter = FromWire(n.RxRateLimiter),
            TxRateLimiter = FromWire(n.TxRateLimiter),
        }));
        if (c.Rng) devices.Add(new RngSpec { RateLimiter = FromWire(c.RngRateLimiter) });
        return devices;
    }

    /// <summary>A limiter off the wire; null for none or one with neither bucket.</summary>
    public static RateLimiterSpec? FromWire(Proto.Worker.RateLimiter? r) =>
        r is null || (r.Bandwidth is null && r.Ops is null) ? null : new RateLimiterSpec(FromWire(r.Bandwidth), FromWire(r.Ops));

    private static TokenBucketSpec? FromWire(Proto.Worker.TokenBucket? b) => b is null ? null : new TokenBucketSpec(b.Size, b.OneTimeBurst, b.RefillTimeMs);

    /// <summary>Applies an update request to the machine, all or none; a refusal is InvalidArgument naming the API field.</summary>
    public static void UpdateRateLimiters(MicroVm vm, UpdateRateLimiters u)
    {
        try
        {
            vm.UpdateRateLimiters(ToChanges(u));
        }
        catch (RateLimiterConfigException e)
        {
            // An unknown device is the update's id field; a bad bucket names its own field.
            string field = e.Reason == RateLimiterConfigError.UnknownDevice ? u.Updates.First(x => x.LimiterField == e.Field).Field : e.Field;
            throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, field, e.Detail);
        }
    }

    /// <summary>An update request's changes in the VMM's terms.</summary>
    private static List<RateLimiterChange> ToChanges(UpdateRateLimiters u) =>
        [.. u.Updates.Select(x => new RateLimiterChange(
            x.Target switch
            {
                WireTarget.Drive => Target.Drive,
                WireTarget.NetworkRx => Target.NetworkRx,
                WireTarget.NetworkTx => Target.NetworkTx,
                WireTarget.Entropy => Target.Entropy,
                _ => throw new WorkerFailure(WorkerErrorCode.WorkerErrorInvalidArgument, x.Field, $"unknown rate limiter target {x.Target}"),
            },
            x.DeviceId, FromWire(x.Limiter), x.LimiterField))];

    /// <summary>The API's name (a vm.proto VmSpec path) for the VMM's name of a device input, e.g. "drive[1]" → "spec.drives[1].path".</summary>
    public static string ApiField(string field)
    {
        if (Indexed(field, "drive[") is { } drive) return $"spec.drives[{drive}].path";
        if (Indexed(field, "net[") is { } nic) return $"spec.network_interfaces[{nic}]";
        return field switch
        {
            "vsock" => "spec.vsock",
            "rng" => "spec.rng",
            _ => "spec",
        };
    }

    private static string? Indexed(string field, string prefix) =>
        field.StartsWith(prefix, StringComparison.Ordinal) && field.EndsWith(']') ? field[prefix.Length..^1] : null;

    /// <summary>A device error as a worker error: the host cannot provide it now (Unavailable), or the input is wrong (InvalidArgument).</summary>
    public static WorkerErrorCode Code(DeviceConfigException e) =>
        e.Problem == DeviceConfigProblem.HostUnavailable ? WorkerErrorCode.WorkerErrorUnavailable : WorkerErrorCode.WorkerErrorInvalidArgument;
}
