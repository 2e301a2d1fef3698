using System.CommandLine;
using FireSharp.Proto.V1;
using Grpc.Core;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp vm logs ID [-f] [--console|--vmm] [--tail BYTES]</c> and <c>firesharp fn logs NAME [-f] [--limit N]</c>:
/// a VM's kept logs (its VMM log and its console, from the files the daemon keeps until the VM is deleted) and a
/// function's recent invocations as Lambda logs them (START, output, END, REPORT). See docs/observability.md, "Logs".
/// </summary>
internal static class LogCommands
{
    public static Command VmLogs()
    {
        var id = new Argument<string>("id") { Description = "the VM's id" };
        var follow = new Option<bool>("--follow", "-f") { Description = "keep printing new output until Ctrl-C" };
        var console = new Option<bool>("--console") { Description = "only the guest's console output" };
        var vmm = new Option<bool>("--vmm") { Description = "only the VMM's (the VM's worker process's) log" };
        var tail = new Option<long>("--tail") { Description = "only the last this many bytes of each log (0: all that is kept)" };
        var command = new Command("logs", "show the VM's VMM log and console output (kept until the VM is deleted)") { id, follow, console, vmm, tail };
        command.SetAction((parse, ct) =>
        {
            if (parse.GetValue(console) && parse.GetValue(vmm))
            {
                return Task.FromResult(CliErrors.Report(Console.Error, new UsageException("--console and --vmm exclude each other", "give neither for both")));
            }
            var request = new StreamVmLogsRequest
            {
                Id = parse.GetValue(id)!,
                Source = parse.GetValue(console) ? VmLogSource.Console : parse.GetValue(vmm) ? VmLogSource.Vmm : VmLogSource.Unspecified,
                Follow = parse.GetValue(follow),
                TailBytes = parse.GetValue(tail),
            };
            return VmClientCommands.CallAsync(parse, async (client, options) =>
            {
                using var call = client.StreamVmLogs(request, options);
                using var stdout = Console.OpenStandardOutput();
                await foreach (var chunk in call.ResponseStream.ReadAllAsync(ct))
                {
                    stdout.Write(chunk.Data.Span);
                    stdout.Flush();
                }
            }, ct, streaming: true);
        });
        return command;
    }

    public static Command FunctionLogs()
    {
        var name = new Argument<string>("name") { Description = "the function's name" };
        var follow = new Option<bool>("--follow", "-f") { Description = "keep printing new invocations until Ctrl-C" };
        var limit = new Option<int>("--limit") { Description = "only the last this many invocations (0: all that are kept, up to 100)" };
        var command = new Command("logs", "show the logs of the function's recent invocations (START, output, END and REPORT lines)") { name, follow, limit };
        command.SetAction((parse, ct) =>
        {
            var request = new StreamFunctionLogsRequest { Name = parse.GetValue(name)!, Follow = parse.GetValue(follow), Limit = parse.GetValue(limit) };
            return DaemonClient.CallAsync(parse, invoker => new FunctionService.FunctionServiceClient(invoker), async (client, options) =>
            {
                using var call = client.StreamFunctionLogs(request, options);
                await foreach (var entry in call.ResponseStream.ReadAllAsync(ct))
                {
                    Console.Out.Write(entry.Text);
                    Console.Out.Flush();
                }
            }, ct, streaming: true);
        });
        return command;
    }
}
