using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>The worker's snapshot requests: restore (instead of create) and take a snapshot of its machine.</summary>
public sealed partial class VmWorker
{
    /// <summary>Builds this worker's machine from a snapshot; the machine is then RUNNING, or PAUSED when asked.</summary>
    private void Restore(RestoreMachine r)
    {
        lock (_gate)
            if (_state != MachineState.Empty) throw WrongState("restore into");
        var overrides = new RestoreOverrides
        {
            Resume = !r.Paused,
            Serial = _console,
            Logger = _logger,
            DrivePaths = r.DrivePaths.ToDictionary(kv => kv.Key, kv => kv.Value),
            VsockUdsPath = r.VsockPath.Length == 0 ? null : r.VsockPath,
        };
        MicroVm vm;
        try
        {
            vm = SnapshotRestore.Restore(r.Dir, overrides);
        }
        catch (Exception e) when (WorkerFailures.ForRestore(e) is { } failure)
        {
            throw failure;
        }
        lock (_gate)
        {
            _id = r.Id;
            _vm = vm;
            SetState(r.Paused ? MachineState.Paused : MachineState.Running);
        }
        _ = WatchExitAsync(vm);
        _ = WatchBootDoneAsync(vm);
        _logger.LogInformation("worker {Id}: machine restored from {Dir} ({State})", r.Id, r.Dir, r.Paused ? "paused" : "running");
    }

    /// <summary>Snapshots the machine; on failure the machine is as it was (SnapshotWriter puts it back).</summary>
    private WorkerMessage TakeSnapshot(TakeSnapshot t)
    {
        MicroVm vm;
        lock (_gate)
        {
            if (_state is not (MachineState.Running or MachineState.Paused) || _vm is null) throw WrongState("snapshot");
            vm = _vm;
        }
        SnapshotResult result;
        try
        {
            result = SnapshotWriter.Create(vm, t.Dir, t.Resume, diff: t.Diff, trackDirty: t.TrackDirty);
        }
        catch (SnapshotException e)
        {
            throw WorkerFailures.ForSnapshot(e);
        }
        lock (_gate)
        {
            if (_state is MachineState.Running or MachineState.Paused)
                SetState(vm.Machine.State == VmState.Paused ? MachineState.Paused : MachineState.Running);
        }
        _logger.LogInformation("worker {Id}: snapshot {Dir} taken ({Written} of {Total} memory bytes written) in {Ms:F1} ms",
            _id, result.Directory, result.MemoryBytesWritten, result.MemoryBytes, result.Elapsed.TotalMilliseconds);
        return new WorkerMessage
        {
            SnapshotTaken = new SnapshotTaken
            {
                Status = Status(),
                Dir = result.Directory,
                MemoryBytes = result.MemoryBytes,
                MemoryBytesWritten = result.MemoryBytesWritten,
                StateFileBytes = result.StateFileBytes,
                DurationMs = result.Elapsed.TotalMilliseconds,
                PausedMs = result.PausedFor.TotalMilliseconds,
                BaseDir = result.BaseDirectory ?? "",
                DiffPages = (uint)(result.DiffPages ?? 0),
            },
        };
    }
}
