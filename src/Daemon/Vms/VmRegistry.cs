using System.Collections.Concurrent;

namespace FireSharp.Daemon.Vms;

/// <summary>
/// The daemon's VMs by id, and their records on disk (through <see cref="Store"/>). Adding a VM goes through
/// <see cref="VmAdmission"/>, which checks the daemon's limits first.
/// </summary>
internal sealed class VmRegistry(DaemonOptions options, VmRecordStore store)
{
    private readonly ConcurrentDictionary<string, VmEntry> _vms = new(StringComparer.Ordinal);

    public VmRecordStore Store { get; } = store;

    public int Count => _vms.Count;

    public ICollection<VmEntry> Entries => _vms.Values;

    public bool Contains(string id) => _vms.ContainsKey(id);

    /// <summary>A new entry for a VM with this id, in its directory under the state dir.</summary>
    public VmEntry NewEntry(string id, VmInfo vm, RestoreVmCommand? restoredFrom = null) =>
        new(id, options.VmDir(id)) { Vm = vm, RestoredFrom = restoredFrom, Announced = false };

    /// <summary>Only <see cref="VmAdmission"/> and start-up add VMs.</summary>
    internal void Add(VmEntry entry) => _vms[entry.Id] = entry;

    /// <summary>Takes the VM out of the registry (its files are the caller's to remove).</summary>
    public void Remove(VmEntry entry) => _vms.TryRemove(new KeyValuePair<string, VmEntry>(entry.Id, entry));

    /// <summary>The VM with this id; InvalidArgument for a malformed id, NotFound for an unknown or deleted one.</summary>
    public VmEntry Find(string id)
    {
        SpecValidator.ValidateId(id);
        if (!_vms.TryGetValue(id, out var entry)) throw VmApiException.NotFound(id);
        entry.ThrowIfDeleted();
        return entry;
    }

    /// <summary>The VM with this id, if it is in the registry (any string, no validation).</summary>
    public bool TryFind(string id, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out VmEntry entry) => _vms.TryGetValue(id, out entry);

    /// <summary>Writes the VM's record (see <see cref="VmRecordStore.Save"/>).</summary>
    public void Save(VmEntry entry) => Store.Save(entry);

    /// <summary>The VMs that have every label of <paramref name="selector"/> and one of <paramref name="phases"/> (any when empty), by id.</summary>
    public List<VmInfo> List(IReadOnlyDictionary<string, string>? selector = null, IReadOnlyCollection<VmPhase>? phases = null)
    {
        var result = new List<VmInfo>();
        foreach (var entry in _vms.Values)
        {
            VmInfo vm;
            lock (entry.Gate)
            {
                if (entry.Deleted) continue;
                vm = entry.Vm;
            }
            if (selector is not null && selector.Any(kv => !vm.Labels.TryGetValue(kv.Key, out var v) || v != kv.Value)) continue;
            if (phases is { Count: > 0 } && !phases.Contains(vm.Phase)) continue;
            result.Add(vm);
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return result;
    }
}
