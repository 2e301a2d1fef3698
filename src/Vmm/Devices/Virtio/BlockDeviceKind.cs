using System.Globalization;
using FireSharp.Devices.Manager;
using FireSharp.Kvm.Interop;
using Microsoft.Extensions.Logging;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// virtio-blk for the device manager: a <see cref="DriveSpec"/> becomes a <see cref="VirtioBlock"/> over a
/// <see cref="RawImageBackend"/>. A snapshot records each drive under its id with the image path, read-only,
/// root, GET_ID serial and the image size in bytes (<see cref="Keys"/>); a restore opens the recorded image, or
/// the clone's own copy (the override), which must exist and have that size.
/// </summary>
public sealed class BlockDeviceKind : VirtioDeviceKind<DriveSpec, VirtioBlock>
{
    public const string Name = "virtio-blk";

    public static readonly BlockDeviceKind Instance = new();

    private BlockDeviceKind() { }

    /// <summary>The settings of a drive's snapshot descriptor.</summary>
    public static class Keys
    {
        public const string Path = "path", ReadOnly = "readOnly", Root = "root", Serial = "serial", SizeBytes = "sizeBytes";
    }

    public override string Kind => Name;
    public override string Noun => "drive";
    public override string Field(int index) => DriveSpec.FieldName(index);

    protected override void Validate(IReadOnlyList<DriveSpec> configs) => DriveSpec.Validate(configs);

    protected override string Id(IReadOnlyList<DriveSpec> configs, int index) => DriveSpec.EffectiveId(configs, index);

    protected override VirtioBlock Open(IReadOnlyList<DriveSpec> configs, int index, ILogger logger)
    {
        var drive = configs[index];
        var backend = RawImageBackend.Open(drive.Path, drive.ReadOnly, Field(index));
        try
        {
            return new VirtioBlock(backend, Id(configs, index), drive.Serial, logger, rateLimiter: new RateLimiting.RateLimiter(drive.RateLimiter));
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    protected override IReadOnlyDictionary<string, string> Settings(DriveSpec config, VirtioBlock device) =>
        new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [Keys.Path] = config.Path,
            [Keys.ReadOnly] = config.ReadOnly ? "true" : "false",
            [Keys.Root] = config.IsRoot ? "true" : "false",
            [Keys.Serial] = config.Serial ?? "",
            [Keys.SizeBytes] = device.Backend.SizeBytes.ToString(CultureInfo.InvariantCulture),
        };

    /// <summary><c>root=/dev/vdX rw</c> (or <c>ro</c>) for the root drive: Linux names virtio disks vda, vdb, ... in probe (slot) order.</summary>
    protected override IEnumerable<string> KernelParameters(IReadOnlyList<DriveSpec> configs)
    {
        for (int i = 0; i < configs.Count; i++)
            if (configs[i].IsRoot) yield return $"root=/dev/vd{(char)('a' + i)} {(configs[i].ReadOnly ? "ro" : "rw")}";
    }

    protected override string Describe(VirtioBlock device) =>
        device.Backend is RawImageBackend raw ? $"{device.Id} ({raw.Path})" : device.Id;

    protected override DriveSpec Restore(DeviceDescriptor descriptor, string? hostOverride)
    {
        var (saved, size) = Parse(descriptor);
        bool overridden = hostOverride is not null;
        var drive = overridden ? saved with { Path = hostOverride! } : saved;
        string origin = overridden ? $"the override's image {drive.Path}" : $"its image {drive.Path}";
        // A jailed worker was handed its drives open (PreopenedFiles): their paths are not in its root.
        long length;
        if (PreopenedFiles.Length(drive.Path, drive.ReadOnly) is { } given)
        {
            length = given;
        }
        else
        {
            // A drive path may be a symlink (build/guest/rootfs.ext4 is one): its target's size is the drive's.
            var info = new FileInfo(drive.Path);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
            if (!info.Exists)
                throw new DeviceRestoreException(overridden ? DeviceRestoreProblem.Mismatch : DeviceRestoreProblem.NotFound,
                    $"drive '{descriptor.Id}': {origin} does not exist");
            length = info.Length;
        }
        if ((ulong)length != size)
            throw new DeviceRestoreException(DeviceRestoreProblem.Mismatch,
                $"drive '{descriptor.Id}' was {size} bytes, but {origin} is {length} bytes: a restored drive must have the snapshot's size");
        return drive;
    }

    /// <summary>The drive a snapshot's descriptor records, and its image size; <see cref="DeviceRestoreException"/> (Corrupt) for bad settings.</summary>
    public (DriveSpec Drive, ulong SizeBytes) Parse(DeviceDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        if (!ulong.TryParse(Setting(descriptor, Keys.SizeBytes), NumberStyles.None, CultureInfo.InvariantCulture, out ulong size))
            throw Corrupt(descriptor, $"has a bad size '{Setting(descriptor, Keys.SizeBytes)}'");
        string serial = Setting(descriptor, Keys.Serial);
        var drive = new DriveSpec
        {
            Id = descriptor.Id,
            Path = Setting(descriptor, Keys.Path),
            ReadOnly = Flag(descriptor, Keys.ReadOnly),
            IsRoot = Flag(descriptor, Keys.Root),
            Serial = serial.Length == 0 ? null : serial,
        };
        return (drive, size);
    }
}
