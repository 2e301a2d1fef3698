using System.Collections.Concurrent;
using System.Text;
using FireSharp.Daemon;
using FireSharp.Daemon.Hosting;
using FireSharp.Daemon.Functions;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FireSharp.Tests.Functions;

using StartKind = FireSharp.Pool.StartKind;

/// <summary>
/// FunctionService as the daemon serves it (Kestrel on a Unix socket, the <see cref="ErrorInterceptor"/>,
/// <see cref="FunctionServices.AddFunctions"/>) over a <see cref="FakeFunctionVmFactory"/>: no VMs, no KVM.
/// The state directory holds stand-in kernel, rootfs, code and layer files (validation only checks they exist).
/// </summary>
internal sealed class FunctionTestServer : IAsyncDisposable
{
    private WebApplication? _app;

    private FunctionTestServer(DaemonOptions options, FakeFunctionVmFactory factory)
    {
        Options = options;
        Factory = factory;
    }

    public DaemonOptions Options { get; }
    public FakeFunctionVmFactory Factory { get; }
    public GrpcChannel Channel { get; private set; } = null!;
    public FunctionService.FunctionServiceClient Client { get; private set; } = null!;
    public string Dir => Options.StateDir;
    public string Kernel => Path.Combine(Dir, "vmlinux");
    public string Rootfs => Path.Combine(Dir, "rootfs.ext4");
    public string Code => Path.Combine(Dir, "code.ext4");
    public string Layer(int i) => Path.Combine(Dir, $"layer{i}.ext4");

    public static async Task<FunctionTestServer> StartAsync(Func<DaemonOptions, DaemonOptions>? configure = null, string? stateDir = null, FakeFunctionVmFactory? factory = null)
    {
        stateDir ??= ApiTestServerDir();
        var options = new DaemonOptions { StateDir = stateDir, Socket = Path.Combine(stateDir, "api.sock"), FunctionConcurrencyLimit = 150, Cgroups = FireSharp.Daemon.Isolation.CgroupMode.Off, AllowedPathRoots = ["/"] };
        if (configure is not null) options = configure(options);
        var server = new FunctionTestServer(options, factory ?? new FakeFunctionVmFactory());
        foreach (var f in (string[])[server.Kernel, server.Rootfs, server.Code, .. Enumerable.Range(0, 7).Select(server.Layer)])
            if (!File.Exists(f)) await File.WriteAllTextAsync(f, "stand-in");
        await server.StartServerAsync();
        return server;
    }

    private static string ApiTestServerDir()
    {
        string dir = Path.Combine("/tmp", "fsf-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    private async Task StartServerAsync()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.ListenUnixSocket(Options.Socket, l => l.Protocols = HttpProtocols.Http2));
        builder.Services.AddSingleton(Options);
        builder.Services.AddSingleton(new HostLimits(8UL << 30, 64));
        builder.Services.AddGrpc(o => o.Interceptors.Add<ErrorInterceptor>());
        builder.Services.AddFunctions(Options, _ => Factory);
        _app = builder.Build();
        _app.MapFunctions();
        if (File.Exists(Options.Socket)) File.Delete(Options.Socket);
        await _app.StartAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Channel = DaemonChannel.ForUnixSocket(Options.Socket); // takes 6 MB function payloads
        Client = new FunctionService.FunctionServiceClient(Channel);
    }

    /// <summary>Stops the server (the pool shuts its VMs down) and starts a new one on the same state directory.</summary>
    public async Task RestartAsync()
    {
        await StopServerAsync();
        await StartServerAsync();
    }

    private async Task StopServerAsync()
    {
        Channel?.Dispose();
        if (_app is null) return;
        await _app.StopAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await _app.DisposeAsync();
        _app = null;
    }

    public async ValueTask DisposeAsync()
    {
        Factory.ReleaseAll();
        await StopServerAsync();
        try { Directory.Delete(Options.StateDir, recursive: true); }
        catch (IOException) { }
    }

    /// <summary>A valid spec naming the stand-in files.</summary>
    public FunctionSpec Spec(string name = "echo") => new()
    {
        Name = name,
        Image = new FunctionImage { KernelPath = Kernel, RootfsPath = Rootfs },
        Code = new FunctionCode { ImagePath = Code },
        Handler = "function.handler",
    };
}

/// <summary>
/// VMs without VMs: each echoes the payload; a payload starting with "fail" is a handled function error; while
/// <see cref="Hold"/> is set, invocations wait until <see cref="ReleaseAll"/>.
/// </summary>
internal sealed class FakeFunctionVmFactory : IFunctionVmFactory
{
    private TaskCompletionSource _gate = NewGate(released: true);
    private int _created;
    public ConcurrentQueue<string> Discarded { get; } = new();

    public int Created => Volatile.Read(ref _created);

    /// <summary>Invocations that have reached a VM.</summary>
    public int Entered;

    public void Hold() => _gate = NewGate(released: false);

    public void ReleaseAll() => _gate.TrySetResult();

    public Task<IFunctionVm> CreateAsync(FunctionDefinition definition, CancellationToken cancellationToken)
    {
        int n = Interlocked.Increment(ref _created);
        return Task.FromResult<IFunctionVm>(new FakeVm(this, $"fake-{definition.Name}-{n}"));
    }

    public Task DiscardSnapshotsAsync(string functionName, string? keepVersion, CancellationToken cancellationToken)
    {
        Discarded.Enqueue($"{functionName}:{keepVersion}");
        return Task.CompletedTask;
    }

    private static TaskCompletionSource NewGate(bool released)
    {
        var g = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (released) g.SetResult();
        return g;
    }

    private sealed class FakeVm(FakeFunctionVmFactory factory, string id) : IFunctionVm
    {
        public string Id => id;
        public StartKind CreatedAs => StartKind.BootCold;
        public TimeSpan InitDuration => TimeSpan.FromMilliseconds(5);

        public async Task<VmInvokeOutcome> InvokeAsync(VmInvokeRequest request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref factory.Entered);
            await factory._gate.Task.WaitAsync(cancellationToken);
            bool fail = Encoding.UTF8.GetString(request.Payload.Span).StartsWith("fail", StringComparison.Ordinal);
            return fail
                ? new VmInvokeOutcome { Status = VmInvokeStatus.FunctionError, ErrorType = "HandlerError", Payload = """{"errorType":"HandlerError","errorMessage":"asked to fail"}"""u8.ToArray(), LogTail = "failing\n", Duration = TimeSpan.FromMilliseconds(2) }
                : new VmInvokeOutcome { Status = VmInvokeStatus.Success, Payload = request.Payload.ToArray(), LogTail = "echoed\n", Duration = TimeSpan.FromMilliseconds(1.5), MaxMemoryUsedBytes = 20 << 20 };
        }

        public Task ShutdownAsync(string reason, CancellationToken cancellationToken) => Task.CompletedTask;

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
