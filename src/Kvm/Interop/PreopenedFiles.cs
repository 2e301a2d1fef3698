using Microsoft.Win32.SafeHandles;

namespace FireSharp.Kvm.Interop;

/// <summary>
/// Files a jailed worker was handed already open (by its jailer, while still privileged), by the path and access
/// they stand for. A device that would open one of those paths takes the handle instead, so the jailed process
/// needs neither the path in its root nor the right to open it. Empty outside a jail (and in tests).
/// </summary>
public static class PreopenedFiles
{
    private static readonly Dictionary<(string Path, bool ReadOnly), SafeFileHandle> Handles = [];
    private static readonly Lock Gate = new();

    /// <summary>Registers <paramref name="handle"/> as <paramref name="path"/> opened read-only or read-write.</summary>
    public static void Add(string path, bool readOnly, SafeFileHandle handle)
    {
        lock (Gate) Handles[(path, readOnly)] = handle;
    }

    /// <summary>The size of the file handed over as <paramref name="path"/> with that access (without taking it), or null if none was.</summary>
    public static long? Length(string path, bool readOnly)
    {
        lock (Gate) return Handles.TryGetValue((path, readOnly), out var h) ? RandomAccess.GetLength(h) : null;
    }

    /// <summary>The handle for <paramref name="path"/> with that access, once: it then belongs to the caller.</summary>
    public static SafeFileHandle? Take(string path, bool readOnly)
    {
        lock (Gate) return Handles.Remove((path, readOnly), out var h) ? h : null;
    }
}
