namespace FireSharp.Daemon.Vms;

/// <summary>
/// Capacity: how many VMs the daemon keeps (<see cref="DaemonOptions.MaxVms"/>) and how much memory the VMs that
/// hold a machine may add up to (host memory × <see cref="DaemonOptions.MemoryOvercommit"/>). A check and the
/// reservation it allows happen under one lock, so two creates cannot both take the last room.
/// </summary>
internal sealed class VmAdmission(DaemonOptions options, HostLimits host, VmRegistry registry)
{
    private readonly Lock _lock = new();
    private bool _closed;

    /// <summary>Admits a new VM (its entry is CREATING) into the registry, or throws AlreadyExists / ResourceExhausted.</summary>
    public void Admit(VmEntry entry)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (registry.Contains(entry.Id)) throw new VmApiException(VmErrorKind.AlreadyExists, "id", $"a VM with id '{entry.Id}' exists");
            if (registry.Count >= options.MaxVms)
                throw VmApiException.Exhausted(null, $"this daemon allows at most {options.MaxVms} VMs (MaxVms) and has {registry.Count}");
            CheckMemoryBudget(entry.Snapshot().Spec.MemMib, except: null);
            registry.Add(entry);
        }
    }

    /// <summary>
    /// For a VM that ended and starts again: checks that its memory fits the budget once more, then runs
    /// <paramref name="reserve"/> (which makes the VM hold a machine again) under the same lock.
    /// </summary>
    public void Readmit(VmEntry entry, Action reserve)
    {
        lock (_lock)
        {
            CheckMemoryBudget(entry.Snapshot().Spec.MemMib, except: entry);
            reserve();
        }
    }

    /// <summary>Admits nothing more (the daemon is stopping). False when it was closed already.</summary>
    public bool Close()
    {
        lock (_lock)
        {
            if (_closed) return false;
            _closed = true;
            return true;
        }
    }

    /// <summary>Under the lock: throws ResourceExhausted when the memory of VMs with a machine would pass the budget.</summary>
    private void CheckMemoryBudget(long memMib, VmEntry? except)
    {
        if (host.MemoryBytes == ulong.MaxValue) return;
        long committed = 0;
        foreach (var e in registry.Entries)
        {
            if (e == except) continue;
            var vm = e.Snapshot();
            if (VmEntry.HoldsMachine(vm.Phase)) committed += vm.Spec.MemMib;
        }
        long budget = (long)(host.MemoryBytes / (1024 * 1024) * options.MemoryOvercommit);
        if (committed + memMib > budget)
            throw VmApiException.Exhausted("spec.machine.mem_mib",
                $"{memMib} MiB more would bring VM memory to {committed + memMib} MiB; the budget is {budget} MiB (host memory x MemoryOvercommit {options.MemoryOvercommit})");
    }
}
