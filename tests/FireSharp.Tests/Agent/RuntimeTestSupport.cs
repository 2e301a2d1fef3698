using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Agent;

/// <summary>
/// One agent process (on the host, over a Unix socket) for the function-runtime tests of a class,
/// a Runtime API port of its own, and a directory of busybox applets (wget, awk, ...) put first in
/// the functions' PATH, so the example bootstrap runs with the same tools as in the guest.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class RuntimeAgent : IAsyncLifetime
{
    public AgentUnderTest Agent { get; private set; } = null!;
    public int Port { get; private set; }
    public string BusyboxBin { get; private set; } = "";
    public string Root { get; } = TestPaths.TempDir();

    public static string? Busybox { get; } =
        new[] { "/usr/bin/busybox", "/bin/busybox" }.FirstOrDefault(File.Exists);

    public async Task InitializeAsync()
    {
        Agent = await AgentUnderTest.StartAsync();
        Port = FreePort();
        BusyboxBin = Path.Combine(Root, "bin");
        Directory.CreateDirectory(BusyboxBin);
        if (Busybox is not null)
        {
            using var install = Process.Start(Busybox, ["--install", "-s", BusyboxBin])!;
            await install.WaitForExitAsync();
        }
    }

    public async Task DisposeAsync()
    {
        await Agent.DisposeAsync();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }

    /// <summary>A TCP port nobody listens on right now.</summary>
    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>
    /// A task root with the example bootstrap (examples/shell/bootstrap) and a function.sh whose
    /// body is <paramref name="functionSh"/>; extensions (name -> script) go to opt/extensions.
    /// </summary>
    public FunctionInitRequest NewFunction(string? functionSh, IReadOnlyDictionary<string, string>? extensions = null, bool withBootstrap = true)
    {
        var dir = Path.Combine(Root, Guid.NewGuid().ToString("N")[..8]);
        var task = Path.Combine(dir, "task");
        var opt = Path.Combine(dir, "opt");
        Directory.CreateDirectory(task);
        Directory.CreateDirectory(opt);
        if (withBootstrap)
        {
            var bootstrap = Path.Combine(task, "bootstrap");
            File.Copy(Path.Combine(TestPaths.RepoRoot, "examples", "shell", "bootstrap"), bootstrap);
            File.SetUnixFileMode(bootstrap, (UnixFileMode)0b111_101_101);
        }
        if (functionSh is not null) File.WriteAllText(Path.Combine(task, "function.sh"), functionSh);
        if (extensions is not null)
        {
            Directory.CreateDirectory(Path.Combine(opt, "extensions"));
            foreach (var (name, script) in extensions)
            {
                var path = Path.Combine(opt, "extensions", name);
                File.WriteAllText(path, script);
                File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
            }
        }
        var request = new FunctionInitRequest
        {
            FunctionName = "test-fn",
            FunctionVersion = "1",
            Handler = "function.handler",
            MemoryMib = 128,
            InitTimeoutMs = 20_000,
            TaskRoot = task,
            OptDir = opt,
            RuntimeApiPort = (uint)Port,
        };
        request.Env["PATH"] = BusyboxBin + ":/usr/local/bin:/usr/bin:/bin";
        request.Env["TMPDIR"] = dir;
        return request;
    }

    public static InvokeRequest Invocation(string payload, TimeSpan? timeout = null) => new()
    {
        RequestId = Guid.NewGuid().ToString(),
        Payload = Google.Protobuf.ByteString.CopyFromUtf8(payload),
        DeadlineUnixMs = (ulong)DateTimeOffset.UtcNow.Add(timeout ?? TimeSpan.FromSeconds(30)).ToUnixTimeMilliseconds(),
        InvokedFunctionArn = "arn:aws:lambda:local:000000000000:function:test-fn",
        TraceId = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    };

    public Task<AgentClient> ConnectAsync(CancellationToken ct) => Agent.ConnectAsync(ct);
}
