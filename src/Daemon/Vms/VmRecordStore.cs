using FireSharp.Proto.Worker;
using Google.Protobuf;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Vms;

/// <summary>A record read at start-up: a VM to load, or the remains of a create that never finished.</summary>
internal sealed record StoredVm(string Dir, string Id, VmInfo? Vm, WorkerRecord? Worker, RestoreVmCommand? RestoredFrom, JailIdentity? Jail = null)
{
    /// <summary>No record, a record for another id, or one still CREATING: the create never finished.</summary>
    public bool HalfCreated => Vm is null || Vm.Id != Id || Vm.Phase == VmPhase.Creating;
}

/// <summary>
/// The VM records on disk: <c>&lt;StateDir&gt;/vms/&lt;id&gt;/vm.pb</c>, a state.proto VmRecord whose
/// format stays what it was (it embeds the API's Vm message, mapped with <see cref="VmApiMapping"/>).
/// A record is written atomically (a temporary file, fsynced, then renamed over the old one), outside the
/// VM's state lock; records are numbered so that a slower writer never puts an older state back.
/// </summary>
internal sealed class VmRecordStore(ILogger logger)
{
    public const string RecordFileName = "vm.pb";

    /// <summary>Writes the entry's current record (nothing once the VM is deleted). Call without holding its Gate.</summary>
    public void Save(VmEntry entry)
    {
        byte[] bytes;
        long version;
        lock (entry.Gate)
        {
            if (entry.Deleted) return;
            bytes = Encode(entry).ToByteArray();
            version = ++entry.RecordVersion;
        }
        lock (entry.WriteLock)
        {
            if (entry.RecordRemoved || version <= entry.WrittenVersion) return;
            string path = Path.Combine(entry.Dir, RecordFileName);
            try
            {
                AtomicFile.Replace(path, bytes);
                entry.WrittenVersion = version;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                VmLog.PersistFailed(logger, path, e.Message);
            }
        }
    }

    /// <summary>Removes the VM's directory for good: no record is written for it afterwards.</summary>
    public void Remove(VmEntry entry)
    {
        lock (entry.WriteLock)
        {
            entry.RecordRemoved = true;
            DeleteDirectory(entry.Dir);
        }
    }

    /// <summary>Every VM directory under <paramref name="vmsDir"/>, in id order; unreadable records are logged and left out.</summary>
    public async Task<List<StoredVm>> LoadAllAsync(string vmsDir, CancellationToken ct)
    {
        var result = new List<StoredVm>();
        foreach (var dir in Directory.GetDirectories(vmsDir).Order(StringComparer.Ordinal))
        {
            ct.ThrowIfCancellationRequested();
            string id = Path.GetFileName(dir);
            string path = Path.Combine(dir, RecordFileName);
            VmRecord? record = null;
            try
            {
                if (File.Exists(path)) record = VmRecord.Parser.ParseFrom(await File.ReadAllBytesAsync(path, ct).ConfigureAwait(false));
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or IOException)
            {
                VmLog.CorruptRecord(logger, path, e.Message);
                continue; // kept for a human to look at
            }
            if (record?.Vm is null)
            {
                result.Add(new StoredVm(dir, id, null, record?.Worker, null));
                continue;
            }
            if (VmApiMapping.FromRecord(record.Vm) is not { } vm)
            {
                if (record.Vm.State == Proto.V1.VmState.Creating) result.Add(new StoredVm(dir, id, null, record.Worker, null));
                else VmLog.CorruptRecord(logger, path, "the record has no spec or no state");
                continue;
            }
            var restoredFrom = record.RestoredFrom is null ? null : VmApiMapping.ToCommand(record.RestoredFrom);
            result.Add(new StoredVm(dir, id, vm, record.Worker, restoredFrom, record.Jail));
        }
        return result;
    }

    /// <summary>Removes a directory, logging (not throwing) when it cannot.</summary>
    public void DeleteDirectory(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { VmLog.PersistFailed(logger, dir, e.Message); }
    }

    /// <summary>Under the entry's Gate: the record as stored (state.proto).</summary>
    private static VmRecord Encode(VmEntry entry) => new()
    {
        Vm = VmApiMapping.ToProto(entry.Vm),
        Worker = entry.Worker?.Clone(),
        RestoredFrom = entry.RestoredFrom is null ? null : VmApiMapping.ToProto(entry.RestoredFrom),
        Jail = entry.Jail?.Clone(),
    };
}
