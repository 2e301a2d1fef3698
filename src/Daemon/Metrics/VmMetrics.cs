using System.Diagnostics.Metrics;
using FireSharp.Daemon.Vms;
using FireSharp.Kvm.Interop;

namespace FireSharp.Daemon.Metrics;

/// <summary>
/// The VM series: VMs by state, creates and restores, failures by operation and reason, boot and restore times,
/// and each worker's resident memory. <see cref="VmManager"/> reports creates, restores and their failures; the VMs'
/// lifecycle events (<see cref="EventHub.Observer"/>) give boot times and VMs that fail while running; the gauges
/// read the registry and /proc when scraped. The per-VM device series are <see cref="DeviceMetrics"/>'.
/// </summary>
public sealed class VmMetrics
{
    private readonly Meter _meter;
    private readonly Counter<long> _creates, _restores, _failures;
    private readonly Histogram<double> _bootTime, _restoreTime;

    public VmMetrics(IMeterFactory meters)
    {
        ArgumentNullException.ThrowIfNull(meters);
        _meter = meters.Create(MetricNames.Meter);
        _creates = _meter.CreateCounter<long>("firesharp.vm.creates", null, "VMs created (CreateVm that succeeded)");
        _restores = _meter.CreateCounter<long>("firesharp.vm.restores", null, "VMs restored from a snapshot (RestoreVm that succeeded)");
        _failures = _meter.CreateCounter<long>("firesharp.vm.failures", null,
            "Failed creates and restores (operation create|restore, reason: the error kind) and VMs that failed while running (operation run, reason: how it ended)");
        _bootTime = MetricNames.Seconds(_meter, "firesharp.vm.boot.duration", "From the machine's creation to the guest's boot-done signal", MetricNames.StartBuckets);
        _restoreTime = MetricNames.Seconds(_meter, "firesharp.vm.restore.duration", "RestoreVm from the call to the restored VM (worker start and machine restore)", MetricNames.StartBuckets);
    }

    /// <summary>The gauges over <paramref name="manager"/>'s VMs, read at each scrape.</summary>
    internal void Observe(VmManager manager)
    {
        _meter.CreateObservableGauge("firesharp.vms", () => CountByPhase(manager.List()), null, "VMs by state");
        _meter.CreateObservableGauge("firesharp.vm.worker.resident_memory", () => Resident(manager.List()), "By",
            "Resident memory of each VM's worker process (VmRSS: the VMM and the guest memory it has touched)");
        new DeviceMetrics(_meter).Observe(manager);
    }

    internal void Created() => _creates.Add(1);

    internal void Restored(TimeSpan took)
    {
        _restores.Add(1);
        _restoreTime.Record(took.TotalSeconds);
    }

    internal void Failed(string operation, Exception e) =>
        _failures.Add(1, new("operation", operation), new("reason", e is VmApiException api ? Labels.Of(api.Kind) : "internal"));

    /// <summary>Sees every lifecycle event as it is published (quick: called under the hub's lock).</summary>
    internal void OnEvent(VmLifecycleEvent ev)
    {
        if (ev.Kind == VmEventKind.BootDone && ev.BootTimeMs > 0) _bootTime.Record(ev.BootTimeMs / 1000);
        else if (ev is { Kind: VmEventKind.Exited, Phase: VmPhase.Failed, End: { } end })
            _failures.Add(1, new("operation", "run"), new("reason", Labels.Of(end.Kind)));
    }

    private static IEnumerable<Measurement<long>> CountByPhase(IReadOnlyList<VmInfo> vms)
    {
        var counts = new long[Enum.GetValues<VmPhase>().Length];
        foreach (var vm in vms) counts[(int)vm.Phase]++;
        foreach (var phase in Enum.GetValues<VmPhase>())
            yield return new Measurement<long>(counts[(int)phase], new KeyValuePair<string, object?>("state", Labels.Of(phase)));
    }

    private static IEnumerable<Measurement<long>> Resident(IReadOnlyList<VmInfo> vms)
    {
        foreach (var vm in vms)
            if (vm.WorkerPid > 0 && ProcInfo.ResidentBytes(vm.WorkerPid) is { } rss)
                yield return new Measurement<long>((long)rss, new KeyValuePair<string, object?>("vm_id", vm.Id));
    }
}

/// <summary>Label values: enum names in snake_case, as Prometheus labels usually are.</summary>
internal static class Labels
{
    public static string Of<T>(T value) where T : struct, Enum
    {
        string name = value.ToString();
        var sb = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c) && i > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}
