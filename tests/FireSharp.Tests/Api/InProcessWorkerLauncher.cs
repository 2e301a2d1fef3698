using System.Collections.Concurrent;
using FireSharp.Daemon.Workers;
using FireSharp.Worker.Protocol;
using FireSharp.Proto.Worker;
using Microsoft.Extensions.Logging.Abstractions;

using FireSharp.Worker;

using FireSharp.Kvm.Interop;

namespace FireSharp.Tests.Api;

/// <summary>
/// Runs each VM's worker (<see cref="VmWorker"/>, the same class `firesharp-vmm` runs) inside the test
/// process, on the socket the daemon chose. "Killing" a worker aborts it as a crash would. Workers outlive
/// a daemon that is disposed, so a second daemon on the same state directory can adopt them.
/// </summary>
internal sealed class InProcessWorkerLauncher : IWorkerLauncher
{
    private static readonly ulong s_ownStartTime = ProcInfo.StartTime(Environment.ProcessId) ?? 0;
    private readonly ConcurrentDictionary<string, InProcessWorker> _workers = new(StringComparer.Ordinal);

    /// <summary>Workers that have not ended yet.</summary>
    public int LiveCount => _workers.Values.Count(w => !w.Exited.IsCompleted);

    public int Launched { get; private set; }

    public Task<WorkerProcess> LaunchAsync(WorkerLaunch launch, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(launch);
        if (launch.Jail is not null) throw new InvalidOperationException("an in-process worker cannot be jailed: give the daemon Jail = false");
        string socketPath = launch.SocketPath;
        var worker = new VmWorker(socketPath, NullLogger.Instance);
        worker.Start();
        var process = new InProcessWorker(worker, socketPath);
        _workers[socketPath] = process;
        Launched++;
        return Task.FromResult<WorkerProcess>(process);
    }

    public WorkerProcess? Adopt(WorkerRecord record) =>
        _workers.TryGetValue(record.Socket, out var w) && !w.Exited.IsCompleted && record.StartTime == s_ownStartTime ? w : null;

    /// <summary>The machine of the worker serving this socket (null before it is built).</summary>
    public FireSharp.Vm.MicroVm? MachineOf(string socketPath) => _workers[socketPath].Worker.Machine;

    /// <summary>Ends the worker serving this socket as a crash would.</summary>
    public void Kill(string socketPath) => _workers[socketPath].Kill();

    /// <summary>Aborts every worker still running (test cleanup) and waits for them.</summary>
    public async Task KillAllAsync()
    {
        foreach (var w in _workers.Values) w.Kill();
        await Task.WhenAll(_workers.Values.Select(w => w.Exited)).WaitAsync(TimeSpan.FromSeconds(30));
    }

    private sealed class InProcessWorker : WorkerProcess
    {
        private readonly VmWorker _worker;

        public VmWorker Worker => _worker;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public InProcessWorker(VmWorker worker, string socketPath)
        {
            _worker = worker;
            Pid = Environment.ProcessId;
            StartTime = s_ownStartTime;
            SocketPath = socketPath;
            Exited = RunAsync();
        }

        public override Task<WorkerExit> Exited { get; }

        private async Task<WorkerExit> RunAsync()
        {
            await _worker.Completion;
            await _worker.DisposeAsync();
            return new WorkerExit("in-process worker ended");
        }

        public override void Kill() => _worker.Abort();
    }
}
