using System.Diagnostics.Metrics;
using FireSharp.Daemon.Vms;
using FireSharp.Proto.Worker;

namespace FireSharp.Daemon.Metrics;

/// <summary>
/// The per-VM device series (label <c>vm_id</c>): virtio-blk requests, bytes and flushes, virtio-net packets, bytes and
/// drops, vsock connections and packets, KVM exits by reason, and rate-limiter throttle time. The counters live in
/// each worker; a scrape asks every live worker for them (worker.proto's metrics request, on a connection of its own)
/// through <see cref="WorkerCounters"/>, which caches them briefly and never waits for a hung worker more than
/// <see cref="WorkerCounters.Timeout"/>. A VM's series are there while it has a running machine.
/// </summary>
internal sealed class DeviceMetrics(Meter meter)
{
    private readonly Meter _meter = meter;

    public void Observe(VmManager manager)
    {
        var counters = new WorkerCounters(manager);
        Counter("firesharp.vm.block.requests", null, "virtio-blk requests completed", counters,
            static m => m.Drives.Select(d => Drive((long)d.Requests, d.Id)));
        Counter("firesharp.vm.block.read", "By", "Bytes read from drives' backends", counters,
            static m => m.Drives.Select(d => Drive((long)d.ReadBytes, d.Id)));
        Counter("firesharp.vm.block.written", "By", "Bytes written to drives' backends", counters,
            static m => m.Drives.Select(d => Drive((long)d.WrittenBytes, d.Id)));
        Counter("firesharp.vm.block.flushes", null, "virtio-blk flushes", counters,
            static m => m.Drives.Select(d => Drive((long)d.Flushes, d.Id)));
        Seconds("firesharp.vm.block.throttled", "Time a drive's rate limiter held its requests back", counters,
            static m => m.Drives.Select(d => (d.ThrottledSeconds, Tags("drive", d.Id))));

        Counter("firesharp.vm.net.packets", null, "virtio-net frames (direction rx: to the guest, tx: from it)", counters,
            static m => m.Nics.SelectMany(n => Both(n.Id, n.RxPackets, n.TxPackets)));
        Counter("firesharp.vm.net", "By", "virtio-net bytes (direction rx: to the guest, tx: from it)", counters,
            static m => m.Nics.SelectMany(n => Both(n.Id, n.RxBytes, n.TxBytes)));
        Counter("firesharp.vm.net.dropped", null, "virtio-net frames dropped (rx: no guest buffer or too large; tx: malformed or the tap refused)", counters,
            static m => m.Nics.SelectMany(n => Both(n.Id, n.RxDropped, n.TxDropped)));
        Seconds("firesharp.vm.net.throttled", "Time an interface's rate limiter held traffic back", counters,
            static m => m.Nics.SelectMany(n => new[] { (n.RxThrottledSeconds, Tags("interface", n.Id, "rx")), (n.TxThrottledSeconds, Tags("interface", n.Id, "tx")) }));

        Counter("firesharp.vm.vsock.connections", null, "vsock connections opened (either side)", counters,
            static m => m.Vsock is { } v ? [((long)v.ConnectionsOpened, Tags())] : []);
        Counter("firesharp.vm.vsock.connections_refused", null, "vsock connections refused at the connection limit or buffer budget", counters,
            static m => m.Vsock is { } v ? [((long)v.ConnectionsRefused, Tags())] : []);
        Counter("firesharp.vm.vsock.packets", null, "vsock packets (direction rx: to the guest, tx: from it)", counters,
            static m => m.Vsock is { } v ? [((long)v.PacketsOut, Tags(null, null, "rx")), ((long)v.PacketsIn, Tags(null, null, "tx"))] : []);
        Counter("firesharp.vm.vsock.resets", null, "vsock RSTs sent to the guest", counters,
            static m => m.Vsock is { } v ? [((long)v.Rsts, Tags())] : []);
        _meter.CreateObservableGauge("firesharp.vm.vsock.connections_open", () => Read<long>(counters,
            static m => m.Vsock is { } v ? [((long)v.ConnectionsOpen, Tags())] : []), null, "vsock connections open now");

        Counter("firesharp.vm.kvm.exits", null, "KVM_RUN returns by reason (io, mmio, interrupted: signals and kicks, other: the exit that ended the guest)", counters,
            static m => m.Exits is { } e
                ? [((long)e.Io, Reason("io")), ((long)e.Mmio, Reason("mmio")), ((long)e.Interrupted, Reason("interrupted")), ((long)e.Other, Reason("other"))]
                : []);
    }

    private void Counter(string name, string? unit, string description, WorkerCounters counters,
        Func<MachineMetrics, IEnumerable<(long Value, KeyValuePair<string, object?>[] Tags)>> select) =>
        _meter.CreateObservableCounter(name, () => Read(counters, select), unit, description);

    private void Seconds(string name, string description, WorkerCounters counters,
        Func<MachineMetrics, IEnumerable<(double Value, KeyValuePair<string, object?>[] Tags)>> select) =>
        _meter.CreateObservableCounter(name, () => Read(counters, select), "s", description);

    /// <summary>Every live VM's measurements, each with its <c>vm_id</c>.</summary>
    private static IEnumerable<Measurement<T>> Read<T>(WorkerCounters counters, Func<MachineMetrics, IEnumerable<(T Value, KeyValuePair<string, object?>[] Tags)>> select)
        where T : struct
    {
        foreach (var (id, metrics) in counters.Current())
            foreach (var (value, tags) in select(metrics))
            {
                tags[0] = new("vm_id", id);
                yield return new Measurement<T>(value, tags);
            }
    }

    /// <summary>Tags with slot 0 left for vm_id, then a device (drive or interface) and a direction when given.</summary>
    private static KeyValuePair<string, object?>[] Tags(string? deviceKey = null, string? device = null, string? direction = null)
    {
        var tags = new List<KeyValuePair<string, object?>> { default };
        if (deviceKey is not null) tags.Add(new(deviceKey, device));
        if (direction is not null) tags.Add(new("direction", direction));
        return [.. tags];
    }

    private static (long, KeyValuePair<string, object?>[]) Drive(long value, string id) => (value, Tags("drive", id));

    private static KeyValuePair<string, object?>[] Reason(string reason) => [default, new("reason", reason)];

    private static (long, KeyValuePair<string, object?>[])[] Both(string nic, ulong rx, ulong tx) =>
        [((long)rx, Tags("interface", nic, "rx")), ((long)tx, Tags("interface", nic, "tx"))];
}

/// <summary>
/// The live workers' counters for one scrape. Stale after <see cref="MaxAge"/>: the next read asks every live
/// worker at once, each with <see cref="Timeout"/>, and waits for them at most that long; a worker that does not
/// answer keeps its last answer (counters must not go back) until its VM has no worker.
/// </summary>
internal sealed class WorkerCounters(VmManager manager)
{
    public static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(800);
    public static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(1);

    private readonly Lock _gate = new();
    private Dictionary<string, MachineMetrics> _cache = [];
    private long _refreshedAt;
    private Task? _refresh;

    public IReadOnlyDictionary<string, MachineMetrics> Current()
    {
        Task refresh;
        lock (_gate)
        {
            if (_refreshedAt != 0 && System.Diagnostics.Stopwatch.GetElapsedTime(_refreshedAt) < MaxAge) return _cache;
            refresh = _refresh ??= RefreshAsync();
        }
        // Bounded: each worker call has its own timeout; this also guards against a stuck connect. A refresh still
        // running counts as fresh for MaxAge, so the scrape's other instruments do not wait for it again.
        bool done;
        try { done = refresh.Wait(Timeout + TimeSpan.FromMilliseconds(200)); }
        catch (AggregateException) { done = true; }
        lock (_gate)
        {
            if (!done) _refreshedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            return _cache;
        }
    }

    private async Task RefreshAsync()
    {
        try
        {
            var live = manager.LiveWorkers();
            var answers = await Task.WhenAll(live.Select(w => AskAsync(w.Id, w.Client))).ConfigureAwait(false);
            lock (_gate)
            {
                var next = new Dictionary<string, MachineMetrics>(StringComparer.Ordinal);
                foreach (var (id, metrics) in answers)
                    if ((metrics ?? _cache.GetValueOrDefault(id)) is { Exits: not null } m) // no Exits: the VM has no machine
                        next[id] = m;
                _cache = next;
                _refreshedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            }
        }
        finally
        {
            lock (_gate) _refresh = null;
        }
    }

    private static async Task<(string Id, MachineMetrics? Metrics)> AskAsync(string id, Workers.WorkerClient client)
    {
        using var cts = new CancellationTokenSource(Timeout);
        try
        {
            return (id, await client.MetricsAsync(cts.Token).ConfigureAwait(false));
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or System.Net.Sockets.SocketException or InvalidDataException
                                      or Google.Protobuf.InvalidProtocolBufferException)
        {
            return (id, null);
        }
    }
}
