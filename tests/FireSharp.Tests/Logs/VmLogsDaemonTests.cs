using System.Text;
using System.Text.Json;
using FireSharp.Cli;
using FireSharp.Daemon;
using FireSharp.Daemon.Hosting;
using FireSharp.Daemon.Workers;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.V1;
using FireSharp.Tests.Api;
using FireSharp.Tests.Support;
using Grpc.Core;

namespace FireSharp.Tests.Logs;

/// <summary>
/// The daemon (in this process, with its real Serilog pipeline and JSON file) and a real `firesharp-vmm` worker
/// process with a tiny guest: the worker's lines reach the daemon's JSON log with the VM's id; the console is kept in
/// console.log past the worker's end; StreamVmLogs and `firesharp vm logs` return both until the VM is deleted.
/// </summary>
[Collection("kvm")]
public sealed class VmLogsDaemonTests
{
    [SkippableFact]
    public async Task Worker_logs_reach_the_daemons_json_log_and_the_console_outlives_the_worker()
    {
        KvmTestSupport.RequireKvm();
        string state = ApiTestServer.NewStateDir();
        string json = Path.Combine(state, "daemon.json");
        var options = new DaemonOptions
        {
            StateDir = state, Socket = Path.Combine(state, "api.sock"), LogLevel = "Debug", LogJsonFile = json, Jail = false, Seccomp = false,
            Cgroups = FireSharp.Daemon.Isolation.CgroupMode.Off, MetricsListen = null, AllowedPathRoots = ["/"],
        };
        var launcher = new ProcessWorkerLauncher(Path.Combine(AppContext.BaseDirectory, "firesharp-vmm"), "Debug"); // the worker apphost beside the tests
        var app = DaemonHost.Build(options, launcher);
        await app.StartAsync().WaitAsync(TimeSpan.FromSeconds(60));
        int workerPid = 0;
        try
        {
            using var channel = DaemonChannel.ForUnixSocket(options.Socket);
            var client = new VmService.VmServiceClient(channel);
            var vm = await client.CreateVmAsync(new CreateVmRequest { Id = "logged", Spec = ApiTestServer.Spec("hello"), Start = true });
            workerPid = vm.WorkerPid;
            Assert.NotEqual(Environment.ProcessId, workerPid);

            // The worker's "machine created" line, relayed: in the daemon's JSON file with the VM's id and the worker's category.
            var created = await WaitForJsonEventAsync(json, e =>
                e.TryGetProperty("VmId", out var id) && id.GetString() == "logged"
                && e.TryGetProperty("SourceContext", out var sc) && sc.GetString() == "FireSharp.Worker"
                && e.TryGetProperty("WorkerMessage", out var m) && m.GetString()!.Contains("machine created", StringComparison.Ordinal));
            Assert.Equal(5002, created.GetProperty("WorkerEventId").GetInt32());

            // The guest said hello and reset; then its worker goes (killed here, as a crash would end it).
            await client.WaitForStateAsync("logged", VmState.Stopped);
            if (ProcInfo.IsAlive(workerPid)) ProcInfo.SendSignal(workerPid, ProcInfo.SIGKILL);
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
                while (ProcInfo.IsAlive(workerPid)) await Task.Delay(50, cts.Token);

            string console = await ReadLogsAsync(client, "logged", VmLogSource.Console);
            Assert.Contains("Hello from FireSharp tiny guest", console, StringComparison.Ordinal);
            string vmm = await ReadLogsAsync(client, "logged", VmLogSource.Vmm);
            Assert.Matches(@"(?m)^\S+Z INFO  FireSharp\.Worker: worker logged: machine created", vmm);
            string both = await ReadLogsAsync(client, "logged", VmLogSource.Unspecified);
            Assert.Contains("machine created", both, StringComparison.Ordinal);
            Assert.Contains("Hello from FireSharp tiny guest", both, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(options.VmsDir, "logged", "console.log")));

            // The command line: `vm logs` works (its output goes to this process's stdout), an unknown VM does not.
            Assert.Equal(0, CliApp.Run(["vm", "logs", "logged", "--console", "--socket", options.Socket]));
            Assert.NotEqual(0, CliApp.Run(["vm", "logs", "nope", "--socket", options.Socket]));
            Assert.NotEqual(0, CliApp.Run(["vm", "logs", "logged", "--console", "--vmm", "--socket", options.Socket]));

            // Deleting the VM deletes its logs.
            await client.DeleteVmAsync(new DeleteVmRequest { Id = "logged", Force = true });
            Assert.False(Directory.Exists(Path.Combine(options.VmsDir, "logged")));
            await RpcAssert.FailsAsync(StatusCode.NotFound, () => ReadLogsAsync(client, "logged", VmLogSource.Console), "id");
        }
        finally
        {
            if (workerPid > 0 && ProcInfo.IsAlive(workerPid)) ProcInfo.SendSignal(workerPid, ProcInfo.SIGKILL);
            await app.StopAsync().WaitAsync(TimeSpan.FromSeconds(60));
            await app.DisposeAsync();
            try { Directory.Delete(state, recursive: true); } catch (IOException) { }
        }
    }

    private static async Task<string> ReadLogsAsync(VmService.VmServiceClient client, string id, VmLogSource source)
    {
        using var call = client.StreamVmLogs(new StreamVmLogsRequest { Id = id, Source = source });
        var text = new StringBuilder();
        await foreach (var chunk in call.ResponseStream.ReadAllAsync())
        {
            if (source != VmLogSource.Unspecified) Assert.Equal(source, chunk.Source);
            text.Append(chunk.Data.ToStringUtf8());
        }
        return text.ToString();
    }

    /// <summary>Polls the daemon's compact-JSON log until an event matches (fails after 60 s).</summary>
    private static async Task<JsonElement> WaitForJsonEventAsync(string path, Func<JsonElement, bool> match)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (true)
        {
            if (File.Exists(path))
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                using var reader = new StreamReader(stream);
                while (await reader.ReadLineAsync(cts.Token) is { } line)
                {
                    if (line.Length == 0) continue;
                    using var doc = JsonDocument.Parse(line);
                    if (match(doc.RootElement)) return doc.RootElement.Clone();
                }
            }
            await Task.Delay(200, cts.Token);
        }
    }
}
