using FireSharp.Daemon.Workers;
using FireSharp.Worker;
using FireSharp.Worker.Protocol;
using FireSharp.Proto.Worker;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>The worker's stop path with an in-process <see cref="VmWorker"/>.</summary>
[Collection("kvm")]
public sealed class WorkerStopTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task Stop_answers_even_when_releasing_the_machine_throws()
    {
        KvmTestSupport.RequireKvm();
        string dir = TestPaths.TempDir();
        string socket = Path.Combine(dir, "worker.sock");
        var worker = new VmWorker(socket, NullLogger.Instance)
        {
            ReleaseMachine = vm =>
            {
                vm.Dispose();
                throw new InvalidOperationException("injected: releasing the machine failed");
            },
        };
        worker.Start();
        try
        {
            using var cts = new CancellationTokenSource(Timeout);
            await using var client = new WorkerClient(socket);
            await client.CallAsync(new WorkerRequest { Create = new CreateMachine { Id = "s", KernelPath = TestPaths.Guest("counter"), MemMib = 16, Vcpus = 1 } }, cts.Token);
            await client.CallAsync(new WorkerRequest { Start = new Empty() }, cts.Token);
            var stopped = await client.CallAsync(new WorkerRequest { Stop = new StopMachine { Force = true } }, cts.Token);
            Assert.Equal(MachineState.Exited, stopped.State);
            Assert.Equal(MachineExitKind.Stopped, stopped.ExitKind);
        }
        finally
        {
            await worker.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}
