using FireSharp.Proto.Worker;
using FireSharp.Tests.Support;
using FireSharp.Worker;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>The worker's VM lifecycle on its own: no socket, no framing (the RPC server is a separate class).</summary>
[Collection("kvm")]
public sealed class WorkerMachineTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task The_machine_runs_a_guest_to_its_end_and_reports_each_state_to_a_subscriber()
    {
        KvmTestSupport.RequireKvm();
        var machine = new WorkerMachine(NullLogger.Instance);
        var events = machine.Subscribe();
        try
        {
            Assert.True(machine.IsEmpty);
            Assert.Equal(WorkerErrorCode.WorkerErrorWrongState, Assert.Throws<WorkerFailure>(machine.Start).Code);
            machine.Create(new CreateMachine { Id = "m", KernelPath = TestPaths.Guest("hello"), MemMib = 16, Vcpus = 1 });
            Assert.Equal(WorkerErrorCode.WorkerErrorWrongState,
                Assert.Throws<WorkerFailure>(() => machine.Create(new CreateMachine { Id = "m", KernelPath = TestPaths.Guest("hello"), MemMib = 16, Vcpus = 1 })).Code);
            machine.Start();

            var states = new List<MachineState>();
            WorkerStatus? last = null;
            using var cts = new CancellationTokenSource(Timeout);
            await foreach (var ev in events.ReadAllAsync(cts.Token))
            {
                states.Add(ev.Status.State);
                last = ev.Status;
                if (ev.Status.State == MachineState.Exited) break;
            }
            Assert.Equal([MachineState.Empty, MachineState.Created, MachineState.Running, MachineState.Exited], states.Distinct());
            Assert.Equal(MachineExitKind.Reset, last!.ExitKind);
            Assert.True(last.ExitClean);
            Assert.Equal(last.Seq, machine.Status().Seq);
            Assert.Equal(WorkerErrorCode.WorkerErrorWrongState, Assert.Throws<WorkerFailure>(() => machine.Input("x"u8)).Code);
        }
        finally
        {
            machine.Unsubscribe(events);
            machine.Close();
            await machine.DisposeMachineAsync();
        }
    }
}
