using System.Diagnostics;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Proto.Agent;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Agent;

/// <summary>
/// A real <c>firesharp-agent</c> process on the host: it serves on a Unix socket, reports ready to
/// a Unix socket, and uses the fake system (no mounts; shutdown ends the process).
/// The binary is $FIRESHARP_AGENT_BIN when set (make test sets it to the NativeAOT build from
/// `make agent`); otherwise src/Agent is built once per test run (framework-dependent) and run
/// with dotnet.
/// </summary>
public sealed class AgentUnderTest : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly StringBuilder _stderr;
    private readonly string _dir;

    private AgentUnderTest(string dir, Process process, Ready ready, long startTimestamp, StringBuilder stderr)
    {
        _dir = dir;
        _stderr = stderr;
        Process = process;
        Ready = ready;
        StartTimestamp = startTimestamp;
    }

    public Process Process { get; }
    public Ready Ready { get; }
    public string SocketPath => Path.Combine(_dir, "agent.sock");
    public string Directory => _dir;
    /// <summary>Stopwatch timestamp taken just before the process was started.</summary>
    public long StartTimestamp { get; }
    /// <summary>When the Ready frame had arrived (Stopwatch timestamp).</summary>
    public long ReadyTimestamp { get; private set; }

    public string Stderr
    {
        get { lock (_stderr) return _stderr.ToString(); }
    }

    public static async Task<AgentUnderTest> StartAsync(params string[] extraArgs)
    {
        var (fileName, prefixArgs) = AgentBinary.Value;
        var dir = TestPaths.TempDir();
        var readyPath = Path.Combine(dir, "ready.sock");
        using var readyListener = AgentReadyListener.Bind(readyPath);
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in prefixArgs) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "--listen", "unix:" + Path.Combine(dir, "agent.sock"), "--ready", "unix:" + readyPath, "--fake-system" })
            psi.ArgumentList.Add(a);
        foreach (var a in extraArgs) psi.ArgumentList.Add(a);

        long start = Stopwatch.GetTimestamp();
        var process = Process.Start(psi)!;
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        process.OutputDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        try
        {
            using var timeout = new CancellationTokenSource(StartTimeout);
            var waitReady = readyListener.WaitAsync(timeout.Token);
            var exited = process.WaitForExitAsync(timeout.Token);
            if (await Task.WhenAny(waitReady, exited) != waitReady)
                throw new InvalidOperationException($"the agent exited ({(process.HasExited ? process.ExitCode : -1)}) before it was ready: {stderr}");
            var ready = await waitReady;
            return new AgentUnderTest(dir, process, ready, start, stderr) { ReadyTimestamp = Stopwatch.GetTimestamp() };
        }
        catch
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.Dispose();
            throw;
        }
    }

    public Task<AgentClient> ConnectAsync(CancellationToken cancellationToken = default) =>
        AgentClient.ConnectUnixAsync(SocketPath, cancellationToken);

    /// <summary>Waits for the agent process to end; its exit code, or null on timeout.</summary>
    public async Task<int?> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await Process.WaitForExitAsync(cts.Token);
            return Process.ExitCode;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                await WaitForExitAsync(TimeSpan.FromSeconds(10));
            }
        }
        catch (InvalidOperationException) { }
        Process.Dispose();
        try { System.IO.Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>How to start the agent: (file, arguments before the agent's own).</summary>
    public static readonly Lazy<(string FileName, string[] Args)> AgentBinary = new(FindOrBuild, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>True when the agent under test is a NativeAOT build (figures are only meaningful then).</summary>
    public static bool IsNativeBuild => AgentBinary.Value.Args.Length == 0;

    private static (string, string[]) FindOrBuild()
    {
        var fromEnv = Environment.GetEnvironmentVariable("FIRESHARP_AGENT_BIN");
        if (!string.IsNullOrEmpty(fromEnv))
        {
            if (!File.Exists(fromEnv)) throw new FileNotFoundException($"FIRESHARP_AGENT_BIN={fromEnv} does not exist (run `make agent`)", fromEnv);
            return (fromEnv, []);
        }
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var artifacts = Path.Combine(AppContext.BaseDirectory, "agent-under-test");
        var project = Path.Combine(TestPaths.RepoRoot, "src", "Agent", "Agent.csproj");
        var psi = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "build", project, "-c", "Release", "--nologo", "-v", "quiet", "--artifacts-path", artifacts })
            psi.ArgumentList.Add(a);
        // The test host's MSBuild settings must not leak into a separate build.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k == "MSBUILD_EXE_PATH").ToList())
            psi.Environment.Remove(key);
        using var build = Process.Start(psi)!;
        var stdout = build.StandardOutput.ReadToEndAsync();
        var stderr = build.StandardError.ReadToEndAsync();
        if (!build.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            build.Kill(entireProcessTree: true);
            throw new TimeoutException("building src/Agent took more than 5 minutes");
        }
        if (build.ExitCode != 0)
            throw new InvalidOperationException($"building src/Agent failed ({build.ExitCode}):\n{stdout.Result}\n{stderr.Result}");
        var dll = System.IO.Directory.GetFiles(Path.Combine(artifacts, "bin"), "firesharp-agent.dll", SearchOption.AllDirectories).FirstOrDefault()
            ?? throw new FileNotFoundException("the agent build produced no firesharp-agent.dll under " + artifacts);
        return (dotnet, [dll]);
    }
}
