using Microsoft.Win32.SafeHandles;

namespace FireSharp.Devices.Virtio.Net;

/// <summary>
/// Taps a jailed worker was handed already attached by its jailer (stage 1: as root, in the VM's network
/// namespace, before the worker gets its own; docs/isolation.md), by the name the spec asked for (null: an
/// automatic tap, handed out in order), or why the jailer could not open one. <see cref="TapBackend.Open"/> takes
/// them from here: the jailed worker has no /dev/net/tun and no right to attach. Empty outside a jail.
/// </summary>
public static class PreopenedTaps
{
    private sealed record Entry(SafeFileHandle? Handle, NetConfigError Error, string Message);

    private const string Auto = "";
    private static readonly Dictionary<string, Queue<Entry>> Taps = new(StringComparer.Ordinal);
    private static readonly Lock Gate = new();

    /// <summary>Registers the attached tap <paramref name="handle"/> for the spec's tap name (null: automatic).</summary>
    public static void Add(string? requested, SafeFileHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Put(requested, new Entry(handle, default, ""));
    }

    /// <summary>Registers the jailer's failure to open that tap: the worker reports it where it would have opened the tap.</summary>
    public static void AddFailure(string? requested, NetConfigError error, string message) => Put(requested, new Entry(null, error, message));

    /// <summary>
    /// The handle handed over for <paramref name="requested"/>, once (it then belongs to the caller); null when
    /// none was (not jailed). Throws the jailer's <see cref="NetConfigException"/> for a tap it could not open.
    /// </summary>
    public static SafeFileHandle? Take(string? requested, string field)
    {
        Entry? entry;
        lock (Gate)
        {
            if (!Taps.TryGetValue(requested ?? Auto, out var queue) || !queue.TryDequeue(out entry)) return null;
        }
        return entry.Handle ?? throw new NetConfigException(field, entry.Error, entry.Message);
    }

    private static void Put(string? requested, Entry entry)
    {
        lock (Gate)
        {
            if (!Taps.TryGetValue(requested ?? Auto, out var queue)) Taps[requested ?? Auto] = queue = new Queue<Entry>();
            queue.Enqueue(entry);
        }
    }
}
