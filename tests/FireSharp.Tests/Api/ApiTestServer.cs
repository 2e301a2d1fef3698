using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Hosting;
using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Serilog;
using Serilog.Core;
using Serilog.Events;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// The real daemon (Kestrel, interceptor, VmService, VmManager) in the test process, on a Unix socket in a
/// short temporary state directory, with in-process workers. Disposing it stops the server, aborts every
/// worker still alive and removes the directory.
/// </summary>
internal sealed class ApiTestServer : IAsyncDisposable
{
    private WebApplication? _app;

    private ApiTestServer(DaemonOptions options, InProcessWorkerLauncher launcher, ITestOutputHelper? output)
    {
        Options = options;
        Launcher = launcher;
        Output = output;
    }

    public DaemonOptions Options { get; }
    public InProcessWorkerLauncher Launcher { get; }
    public ITestOutputHelper? Output { get; }

    /// <summary>The functions' VM factory; null: the daemon's real one.</summary>
    public FireSharp.Pool.IFunctionVmFactory? FunctionVms { get; init; }
    public GrpcChannel Channel { get; private set; } = null!;
    public VmService.VmServiceClient Client { get; private set; } = null!;
    public VmManager Manager => _app!.Services.GetRequiredService<VmManager>();

    /// <summary>A fresh state directory short enough for worker socket paths (sun_path is 108 bytes).</summary>
    public static string NewStateDir()
    {
        string dir = Path.Combine("/tmp", "fsd-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static async Task<ApiTestServer> StartAsync(ITestOutputHelper? output, Func<DaemonOptions, DaemonOptions>? configure = null,
        InProcessWorkerLauncher? launcher = null, string? stateDir = null, FireSharp.Pool.IFunctionVmFactory? functionVms = null)
    {
        KvmTestSupport.RequireKvm();
        stateDir ??= NewStateDir();
        // In-process workers cannot be jailed (the real daemon + worker tests run jailed), and they share the test's
        // pid, which is never put in a cgroup: the cgroup tests turn cgroups on themselves. The tests' guests and
        // images live in the repository, /tmp and the kernel cache (through absolute symlinks): every path is allowed
        // ("/", PathPolicyDaemonTests narrows it).
        // No metrics listener unless a test asks for one: daemons of parallel tests cannot share its port.
        var options = new DaemonOptions
        {
            StateDir = stateDir, Socket = Path.Combine(stateDir, "api.sock"), LogLevel = "Debug", Jail = false, Cgroups = FireSharp.Daemon.Isolation.CgroupMode.Off,
            MetricsListen = null,
            AllowedPathRoots = ["/"],
        };
        if (configure is not null) options = configure(options);
        var server = new ApiTestServer(options, launcher ?? new InProcessWorkerLauncher(), output) { FunctionVms = functionVms };
        await server.StartServerAsync();
        return server;
    }

    private async Task StartServerAsync()
    {
        var serilog = new LoggerConfiguration().MinimumLevel.Debug().MinimumLevel.Override("Microsoft", LogEventLevel.Warning).MinimumLevel.Override("Grpc", LogEventLevel.Warning).WriteTo.Sink(new TestOutputSink(Output)).CreateLogger();
        _app = DaemonHost.Build(Options, Launcher, serilog, FunctionVms is { } f ? _ => f : null);
        await _app.StartAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Channel = DaemonChannel.ForUnixSocket(Options.Socket);
        Client = new VmService.VmServiceClient(Channel);
    }

    /// <summary>Stops this daemon (workers keep running) and starts a new one on the same state directory.</summary>
    public async Task RestartAsync()
    {
        await StopServerAsync();
        await StartServerAsync();
    }

    public async Task StopServerAsync()
    {
        Channel?.Dispose();
        if (_app is null) return;
        await _app.StopAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await _app.DisposeAsync();
        _app = null;
    }

    public async ValueTask DisposeAsync()
    {
        await StopServerAsync();
        await Launcher.KillAllAsync();
        try { Directory.Delete(Options.StateDir, recursive: true); }
        catch (IOException) { }
    }

    /// <summary>Entries under vms/ (each VM's directory).</summary>
    public string[] VmDirs() => Directory.Exists(Options.VmsDir) ? Directory.GetFileSystemEntries(Options.VmsDir) : [];

    /// <summary>Polls GetVm until the VM is in <paramref name="state"/> (fails after 60 s).</summary>
    public Task<FireSharp.Proto.V1.Vm> WaitForStateAsync(string id, VmState state) => Client.WaitForStateAsync(id, state);

    /// <summary>Reads the console (with replay) until <paramref name="text"/> appears (fails after 60 s).</summary>
    public Task<string> ReadConsoleUntilAsync(string id, string text) => Client.ReadConsoleUntilAsync(id, text);

    public static VmSpec Spec(string guest, long memMib = 16, int vcpus = 1) => new()
    {
        Kernel = new KernelSpec { Path = TestPaths.Guest(guest) },
        Machine = new MachineSpec { Vcpus = vcpus, MemMib = memMib },
    };

    /// <summary>Serilog events to the test's output (ignored after the test ended).</summary>
    private sealed class TestOutputSink(ITestOutputHelper? output) : ILogEventSink
    {
        public void Emit(LogEvent logEvent)
        {
            if (output is null) return;
            try
            {
                var source = logEvent.Properties.TryGetValue("SourceContext", out var s) ? s.ToString().Trim('"') : "";
                output.WriteLine($"{logEvent.Timestamp:HH:mm:ss.fff} [{logEvent.Level}] {source}: {logEvent.RenderMessage()}{(logEvent.Exception is null ? "" : " " + logEvent.Exception)}");
            }
            catch (InvalidOperationException) { }
        }
    }
}

internal static class RpcAssert
{
    /// <summary>Asserts the call fails with <paramref name="code"/>; with a field, that the trailer and the message name it.</summary>
    public static async Task<RpcException> FailsAsync(StatusCode code, Func<Task> call, string? field = null)
    {
        var e = await Assert.ThrowsAsync<RpcException>(call);
        Assert.True(code == e.StatusCode, $"expected {code}, got {e.StatusCode}: {e.Status.Detail}");
        Assert.NotEqual(StatusCode.Unknown, e.StatusCode);
        // A deadline can expire on the client's own timer first, with no detail from the server.
        if (code != StatusCode.DeadlineExceeded) Assert.False(string.IsNullOrEmpty(e.Status.Detail));
        if (field is not null)
        {
            Assert.Equal(field, e.Trailers.GetValue(ErrorInterceptor.FieldTrailer));
            Assert.StartsWith(field + ":", e.Status.Detail, StringComparison.Ordinal);
        }
        return e;
    }
}
