using System.Text;
using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Tests.Api;

/// <summary>Waiting helpers over a VmService client, shared by the in-process server and the real daemon fixtures.</summary>
internal static class VmClientTestExtensions
{
    /// <summary>Polls GetVm until the VM reaches <paramref name="state"/> (fails after 60 s).</summary>
    public static async Task<FireSharp.Proto.V1.Vm> WaitForStateAsync(this VmService.VmServiceClient client, string id, VmState state)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            var vm = await client.GetVmAsync(new GetVmRequest { Id = id });
            if (vm.State == state) return vm;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"VM {id} stayed {vm.State}, expected {state}");
            await Task.Delay(20);
        }
    }

    /// <summary>Reads the console (with replay) until <paramref name="text"/> appears (fails after 60 s).</summary>
    public static async Task<string> ReadConsoleUntilAsync(this VmService.VmServiceClient client, string id, string text)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var call = client.StreamConsole(cancellationToken: cts.Token);
        await call.RequestStream.WriteAsync(new ConsoleRequest { Id = id, Replay = true });
        var seen = new StringBuilder();
        await foreach (var chunk in call.ResponseStream.ReadAllAsync(cts.Token))
        {
            seen.Append(Encoding.UTF8.GetString(chunk.Data.Span));
            if (seen.ToString().Contains(text, StringComparison.Ordinal)) return seen.ToString();
        }
        throw new InvalidOperationException($"console of {id} ended without '{text}'; got '{seen}'");
    }
}
