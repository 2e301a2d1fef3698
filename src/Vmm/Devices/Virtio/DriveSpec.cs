using FireSharp.Devices.RateLimiting;
using FireSharp.Kvm.Interop;

namespace FireSharp.Devices.Virtio;

/// <summary>
/// One virtio-blk drive of a VM: a raw image file, read-only or not, with an optional GET_ID serial. The root
/// drive (at most one) becomes <c>root=/dev/vdX</c> on a Linux command line.
/// </summary>
public sealed record DriveSpec : IDeviceConfig
{
    public string Kind => BlockDeviceKind.Name;

    public required string Path { get; init; }
    public bool ReadOnly { get; init; }

    /// <summary>What the guest reads with GET_ID (/sys/block/vdX/serial): up to 20 printable ASCII characters.</summary>
    public string? Serial { get; init; }

    public bool IsRoot { get; init; }

    /// <summary>The drive's rate limiter (bandwidth and operations buckets); null = unlimited.</summary>
    public RateLimiterSpec? RateLimiter { get; init; }

    /// <summary>
    /// The drive's id within the VM (snapshots record drives under it; a restore's drive path overrides name
    /// it). Null = <c>drive</c>N, N the drive's index (<see cref="EffectiveId"/>).
    /// </summary>
    public string? Id { get; init; }

    /// <summary>The id of drive <paramref name="index"/> of a list: its <see cref="Id"/>, or <c>drive</c>N.</summary>
    public static string EffectiveId(IReadOnlyList<DriveSpec> drives, int index) =>
        drives[index].Id ?? "drive" + index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The CLI form <c>PATH[:ro|:rw][:root][:id=SERIAL][:bps=N][:iops=N]</c>, suffixes in any order. A path that
    /// itself contains ':' still works as long as its last part is not one of the suffixes. <c>bps</c> and
    /// <c>iops</c> (K, M, G suffixes: 1K = 1024) set a rate limiter (<see cref="RateLimiterSpec.PerSecond"/>).
    /// </summary>
    public static DriveSpec Parse(string text, string field = "--drive")
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(':').ToList();
        bool? readOnly = null;
        bool root = false;
        string? serial = null;
        long? bps = null, iops = null;
        while (parts.Count > 1)
        {
            string last = parts[^1];
            if (last.StartsWith("bps=", StringComparison.Ordinal))
            {
                if (bps is not null) throw Syntax(field, text, "bps= given twice");
                bps = RateLimiterSpec.ParseAmount(last[4..], field + " bps");
            }
            else if (last.StartsWith("iops=", StringComparison.Ordinal))
            {
                if (iops is not null) throw Syntax(field, text, "iops= given twice");
                iops = RateLimiterSpec.ParseAmount(last[5..], field + " iops");
            }
            else if (last is "ro" or "rw")
            {
                if (readOnly is not null) throw Syntax(field, text, "ro/rw given twice");
                readOnly = last == "ro";
            }
            else if (last == "root")
            {
                if (root) throw Syntax(field, text, "root given twice");
                root = true;
            }
            else if (last.StartsWith("id=", StringComparison.Ordinal))
            {
                if (serial is not null) throw Syntax(field, text, "id= given twice");
                serial = last[3..];
            }
            else break;
            parts.RemoveAt(parts.Count - 1);
        }
        string path = string.Join(':', parts);
        if (path.Length == 0) throw Syntax(field, text, "no image path");
        VirtioBlock.CheckSerial(serial, field);
        return new DriveSpec { Path = path, ReadOnly = readOnly ?? false, IsRoot = root, Serial = serial, RateLimiter = RateLimiterSpec.PerSecond(bps, iops) };
    }

    private static VirtioConfigException Syntax(string field, string text, string why) =>
        new(field, VirtioConfigError.InvalidDriveSyntax, $"\"{text}\": {why} (expected PATH[:ro|:rw][:root][:id=SERIAL][:bps=N][:iops=N])");

    /// <summary>
    /// Checks a VM's drive list before anything is opened: unique ids, at most one root, valid serials, no image
    /// named twice (after resolving symlinks). How many fit is the device manager's business (slots).
    /// </summary>
    public static void Validate(IReadOnlyList<DriveSpec> drives)
    {
        ArgumentNullException.ThrowIfNull(drives);
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        int root = -1;
        for (int i = 0; i < drives.Count; i++)
        {
            var d = drives[i];
            string field = FieldName(i);
            VirtioBlock.CheckSerial(d.Serial, field);
            d.RateLimiter?.Validate(field + ".rate_limiter");
            string id = EffectiveId(drives, i);
            if (id.Length == 0)
                throw new VirtioConfigException(field, VirtioConfigError.DuplicateId, "a drive id must not be empty");
            if (!ids.TryAdd(id, i))
                throw new VirtioConfigException(field, VirtioConfigError.DuplicateId, $"drive id '{id}' is already drive[{ids[id]}]'s");
            if (d.IsRoot)
            {
                if (root >= 0)
                    throw new VirtioConfigException(field, VirtioConfigError.MultipleRootDrives, $"drive[{root}] is already the root drive");
                root = i;
            }
            string key = CanonicalPath(d.Path);
            if (seen.TryGetValue(key, out int first))
                throw new VirtioConfigException(field, VirtioConfigError.DuplicatePath,
                    $"drive image {d.Path} is already drive[{first}]; an image can back only one drive");
            seen.Add(key, i);
        }
    }

    public static string FieldName(int index) => $"drive[{index}]";

    /// <summary>The file's real path (realpath(3)), so that two names of one file compare equal.</summary>
    public static string CanonicalPath(string path) =>
        Libc.RealPath(path) ?? System.IO.Path.GetFullPath(path); // missing: opening it reports the real error
}
