using FireSharp.Kvm.Files;
using FireSharp.Kvm.Interop;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// Image locks, as QEMU takes them (docs/security.md): for as long as a VM exists (across its worker's restarts,
/// until it is deleted) the daemon holds each of its drives open (through the path policy) with an open file
/// description lock on it: exclusive for a read-write drive, shared for a read-only one. A second writer, or a
/// writer beside readers, is refused with FailedPrecondition naming the drive and the VM that holds it. The OFD
/// lock is what other processes (a second daemon) meet; the map by (device, inode) is for this daemon's messages.
/// </summary>
internal sealed class DriveLocks(HostPaths paths)
{
    private sealed record Held(string VmId, string DriveId, string Path, bool Exclusive, SafeFileHandle Handle, (ulong Dev, ulong Ino) Key);

    private readonly Lock _gate = new();
    private readonly Dictionary<(ulong Dev, ulong Ino), List<Held>> _byImage = [];
    private readonly Dictionary<string, List<Held>> _byVm = new(StringComparer.Ordinal);

    /// <summary>
    /// Locks every drive of <paramref name="spec"/> for <paramref name="vmId"/>, all or none (a VM that holds locks
    /// already keeps them). <paramref name="driveField"/> names drive i's path field in errors.
    /// </summary>
    public void Acquire(string vmId, VmConfig spec, Func<int, string> driveField)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(driveField);
        lock (_gate)
        {
            if (_byVm.ContainsKey(vmId)) return;
            var taken = new List<Held>();
            try
            {
                for (int i = 0; i < spec.Drives.Count; i++)
                {
                    var d = spec.Drives[i];
                    string field = driveField(i);
                    var handle = paths.Open(d.Path, PathKind.Drive, field, writable: !d.ReadOnly);
                    var status = PathOpen.Status(handle);
                    var held = new Held(vmId, d.Id, d.Path, !d.ReadOnly, handle, (status.Device, status.Inode));
                    if (Conflict(held, taken) is { } other)
                    {
                        handle.Dispose();
                        string mode = other.Exclusive ? "read-write" : "read-only";
                        if (other.VmId == vmId) // one image as two drives of one VM: a malformed spec
                            throw VmApiException.Invalid(field, $"{d.Path} is also this VM's drive '{other.DriveId}' ({mode}); an image can back one drive, or several read-only ones");
                        string who = $"VM '{other.VmId}' (drive '{other.DriveId}')";
                        throw new VmApiException(VmErrorKind.WrongState, field,
                            $"{d.Path} is in use {mode} by {who}: {(held.Exclusive ? "a read-write drive needs the image to itself" : "a read-only drive cannot share an image with a writer")}");
                    }
                    if (!PathOpen.TryLock(handle, held.Exclusive))
                    {
                        handle.Dispose();
                        throw new VmApiException(VmErrorKind.WrongState, field,
                            $"{d.Path} is locked by another process (another daemon or VMM has it open {(held.Exclusive ? "" : "read-write ")}with a lock)");
                    }
                    taken.Add(held);
                }
            }
            catch
            {
                foreach (var h in taken) h.Handle.Dispose();
                throw;
            }
            _byVm[vmId] = taken;
            foreach (var h in taken)
            {
                if (!_byImage.TryGetValue(h.Key, out var list)) _byImage[h.Key] = list = [];
                list.Add(h);
            }
        }
    }

    /// <summary>Lets go of a VM's locks (it was deleted, or its create failed).</summary>
    public void Release(string vmId)
    {
        lock (_gate)
        {
            if (!_byVm.Remove(vmId, out var held)) return;
            foreach (var h in held)
            {
                if (_byImage.TryGetValue(h.Key, out var list) && list.Remove(h) && list.Count == 0) _byImage.Remove(h.Key);
                h.Handle.Dispose(); // closing the open file description releases its OFD lock
            }
        }
    }

    /// <summary>Lets go of every lock (the daemon is shutting down: the next one takes them again).</summary>
    public void ReleaseAll()
    {
        lock (_gate)
            foreach (var id in _byVm.Keys.ToList()) Release(id);
    }

    /// <summary>Who the image of <paramref name="held"/> is already held by, in a way that conflicts, or null.</summary>
    private Held? Conflict(Held held, List<Held> alsoTaking)
    {
        var others = (_byImage.TryGetValue(held.Key, out var list) ? list : []).Concat(alsoTaking.Where(t => t.Key == held.Key));
        return others.FirstOrDefault(o => o.Exclusive || held.Exclusive);
    }
}
