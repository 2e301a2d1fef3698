using NetArchTest.Rules;

namespace FireSharp.Tests.Architecture;

/// <summary>Inside the worker: the VM's lifecycle never sees the socket or the framing; only the RPC server does.</summary>
public sealed class WorkerLayeringTests
{
    [Fact]
    public void The_worker_machine_knows_no_sockets_or_framing()
    {
        var result = Types.InAssembly(typeof(FireSharp.Worker.VmWorker).Assembly)
            .That().HaveName("WorkerMachine")
            .ShouldNot().HaveDependencyOnAny("System.Net.Sockets", "FireSharp.Worker.Protocol", "FireSharp.Framing")
            .GetResult();
        Assert.Single(Types.InAssembly(typeof(FireSharp.Worker.VmWorker).Assembly).That().HaveName("WorkerMachine").GetTypes());
        Assert.True(result.IsSuccessful, "the worker's lifecycle depends on the transport: " + string.Join(", ", result.FailingTypeNames ?? []));
    }

    [Fact]
    public void Only_the_worker_server_touches_sockets_and_framing()
    {
        var offenders = Types.InAssembly(typeof(FireSharp.Worker.VmWorker).Assembly)
            .That().HaveDependencyOnAny("System.Net.Sockets", "FireSharp.Worker.Protocol")
            .GetTypes().Select(t => t.FullName ?? t.Name)
            .Where(n => !n.StartsWith("FireSharp.Worker.WorkerServer", StringComparison.Ordinal) && !n.StartsWith("FireSharp.Worker.Program", StringComparison.Ordinal))
            .ToList();
        Assert.True(offenders.Count == 0, "socket or framing code outside WorkerServer: " + string.Join(", ", offenders));
    }
}
