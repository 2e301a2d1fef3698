namespace FireSharp.Pool;

// The pool's bookkeeping records. All of it is mutated under PoolContext.Lock.

/// <summary>One registered function: its versions, its concurrency settings and counters.</summary>
internal sealed class FunctionEntry(string name, ConcurrencyLedger.Entry slot)
{
    public string Name { get; } = name;
    public ConcurrencyLedger.Entry Slot { get; } = slot;
    /// <summary>The version new invocations use.</summary>
    public VersionEntry Current { get; set; } = null!;
    /// <summary>Versions that still have VMs (or VM creations), including <see cref="Current"/>.</summary>
    public List<VersionEntry> Versions { get; } = [];
    public int VersionCounter { get; set; }
    public int Provisioned { get; set; }
    public bool ProvisionRetryPending { get; set; }
    public FunctionState State { get; set; } = FunctionState.Active;
    public DateTimeOffset LastModified { get; set; }
    public TaskCompletionSource? Deleted { get; set; }
    public StatsAccumulator Stats { get; } = new();
}

/// <summary>One immutable version of a function and its VMs.</summary>
internal sealed class VersionEntry(FunctionEntry function, FunctionDefinition definition)
{
    public FunctionEntry Function { get; } = function;
    public FunctionDefinition Definition { get; } = definition;
    /// <summary>Idle VMs, least recently used first.</summary>
    public List<PooledVm> Idle { get; } = [];
    public HashSet<PooledVm> Busy { get; } = [];
    public int CreatingForInvoke { get; set; }
    public int CreatingProvisioned { get; set; }
    /// <summary>VMs taken out of Idle/Busy whose shutdown or disposal has not finished.</summary>
    public int Stopping { get; set; }
    /// <summary>No longer current (updated or deleted): VMs are shut down instead of going idle.</summary>
    public bool Draining { get; set; }
    public bool IsEmpty => Idle.Count == 0 && Busy.Count == 0 && CreatingForInvoke == 0 && CreatingProvisioned == 0 && Stopping == 0;

    /// <summary>The most recently used idle VM, provisioned ones first.</summary>
    public PooledVm? TakeIdle()
    {
        int pick = -1;
        for (int i = Idle.Count - 1; i >= 0; i--)
            if (Idle[i].Provisioned) { pick = i; break; }
        if (pick < 0) pick = Idle.Count - 1;
        if (pick < 0) return null;
        var vm = Idle[pick];
        Idle.RemoveAt(pick);
        return vm;
    }

    public int ProvisionedCount()
    {
        int n = 0;
        foreach (var vm in Idle) if (vm.Provisioned) n++;
        foreach (var vm in Busy) if (vm.Provisioned) n++;
        return n;
    }
}

/// <summary>A VM of the pool: in at most one of its version's idle set, busy set or stopping count.</summary>
internal sealed class PooledVm(IFunctionVm vm, VersionEntry version, bool provisioned)
{
    public IFunctionVm Vm { get; } = vm;
    public VersionEntry Version { get; } = version;
    /// <summary>Counts toward the function's provisioned concurrency (never reaped).</summary>
    public bool Provisioned { get; set; } = provisioned;
    public DateTimeOffset IdleSince { get; set; }
}
