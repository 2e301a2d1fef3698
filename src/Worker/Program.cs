using System.CommandLine;
using System.Runtime.InteropServices;
using FireSharp.Kvm.Interop;
using FireSharp.Logging;
using FireSharp.Worker.Protocol;
using Microsoft.Extensions.Logging;

namespace FireSharp.Worker;

/// <summary>
/// <c>firesharp-vmm</c>: one VM's worker process, started by the daemon. It listens on the socket it is
/// given and does nothing else until the daemon sends requests (see worker.proto). It takes only the paths
/// it is given, so a jailer can start it inside a chroot with those paths. SIGTERM/SIGINT stop the guest
/// and end the process. With <c>--log</c>, it writes <see cref="ProcessWorkerLauncher.ReadyLine"/> on its original stdout
/// (the daemon's pipe) once the socket accepts connections, and closes it.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var socket = new Option<string>("--socket") { Description = "Unix socket to create and serve the daemon on", Required = true };
        var log = new Option<string?>("--log") { Description = "append stdout/stderr to this file (stdin becomes /dev/null)" };
        var id = new Option<string?>("--id") { Description = "the VM's id, for logs" };
        var logLevel = new Option<LogLevel>("--log-level") { Description = "log level", DefaultValueFactory = _ => LogLevel.Information };
        var root = new RootCommand("firesharp-vmm: one VM's worker process (started by `firesharp serve`)") { socket, log, id, logLevel };
        root.SetAction(parse => Run(parse.GetValue(socket)!, parse.GetValue(log), parse.GetValue(logLevel)));
        return root.Parse(args).Invoke();
    }

    private static int Run(string socketPath, string? logPath, LogLevel level)
    {
        // A session of our own: the terminal's Ctrl-C and the daemon's process group do not reach the VM.
        ProcInfo.NewSession();
        using var ready = logPath is not null ? ProcInfo.DuplicateStdout() : null; // kept past the redirect
        if (logPath is not null) ProcInfo.RedirectStdio(logPath);
        var logger = new StderrLogger(level);
        using var stop = new CancellationTokenSource();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        var worker = new VmWorker(socketPath, logger);
        try
        {
            worker.RunAsync(stop.Token, () =>
            {
                if (ready is not null) ProcInfo.WriteLineAndClose(ready, WorkerStartup.ReadyLine);
            }).GetAwaiter().GetResult();
            return 0;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            logger.LogError("worker: cannot serve {Socket}: {Error}", socketPath, e.Message);
            return 1;
        }
    }
}
