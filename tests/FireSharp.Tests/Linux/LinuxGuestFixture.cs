using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using FireSharp.Agent.Protocol;
using FireSharp.Daemon.Agent;
using FireSharp.Devices.Legacy;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Vsock;
using FireSharp.Snapshot;
using FireSharp.Tests.Support;
using FireSharp.Vm;

namespace FireSharp.Tests.Linux;

/// <summary>
/// Boot once, restore many: a Linux guest (build/guest/vmlinux, rootfs.ext4 as a read-only root, the guest
/// agent on vsock port 52) booted until the agent reported ready, paused and snapshotted into
/// <c>~/.cache/firesharp/fixtures/&lt;hash&gt;/snapshot</c>, where the hash covers the kernel, the rootfs,
/// the FireSharp assembly and this fixture's spec. Later runs (and every test of a run) reuse it: each
/// <see cref="RestoreCloneAsync"/> is a running clone with its own vsock socket and console, in well under a
/// second instead of a 30-90 s boot. A cached snapshot that does not load (or a clone that the restore refuses)
/// is thrown away and rebuilt once.
/// <para>
/// Concurrency: one build per process (a lock and a cached instance), one per machine (an exclusive lock file
/// beside the fixture directory, which is renamed into place complete or not at all).
/// </para>
/// </summary>
public sealed class LinuxGuestFixture
{
    /// <summary>Bump when the fixture's content changes in a way the hash does not see.</summary>
    private const string FixtureVersion = "linux-agent-fixture-2";

    public const ulong GuestCid = 3;
    public const ulong MemoryMib = 256;

    /// <summary>The read-only root drive's id (what a snapshot records).</summary>
    public const string RootDriveId = "rootfs";

    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(10), LockTimeout = TimeSpan.FromMinutes(30);
    private static readonly TimeSpan AgentConnectTimeout = TimeSpan.FromMinutes(2);
    private static readonly Lock s_gate = new();
    private static LinuxGuestFixture? s_instance;
    private static Exception? s_failure;

    /// <summary>Where the fixture reports what it does (the first <see cref="Get"/> caller's test output).</summary>
    public Action<string> Log { get; private set; } = _ => { };

    private LinuxGuestFixture(string directory, bool built, TimeSpan prepared)
    {
        Directory = directory;
        Built = built;
        PrepareTime = prepared;
    }

    /// <summary>The fixture's directory (in the cache).</summary>
    public string Directory { get; }

    /// <summary>The snapshot every clone restores from.</summary>
    public string SnapshotDir => Path.Combine(Directory, "snapshot");

    /// <summary>The key ring the fixture's snapshot is signed with (restore it with these, or copy them to a daemon's state dir).</summary>
    public string KeysDir => Path.Combine(Directory, "keys");

    /// <summary>A new daemon state directory whose <c>snapshot-keys</c> holds the fixture's keys, so that daemon's RestoreVm accepts the fixture.</summary>
    public string NewDaemonStateDir()
    {
        string stateDir = Path.Combine("/tmp", "fsd-" + Guid.NewGuid().ToString("N")[..10]);
        string keys = Path.Combine(stateDir, "snapshot-keys");
        System.IO.Directory.CreateDirectory(keys);
        foreach (var key in System.IO.Directory.GetFiles(KeysDir, "*" + SnapshotKeys.KeyFileExtension))
            File.Copy(key, Path.Combine(keys, Path.GetFileName(key)));
        return stateDir;
    }

    /// <summary>Whether this process booted the guest (false: the cached snapshot was reused).</summary>
    public bool Built { get; }

    /// <summary>How long getting the fixture took in this process (hashing, and the boot when <see cref="Built"/>).</summary>
    public TimeSpan PrepareTime { get; }

    public static string KernelPath => Path.Combine(TestPaths.RepoRoot, "build", "guest", "vmlinux");
    public static string RootfsPath => Path.Combine(TestPaths.RepoRoot, "build", "guest", "rootfs.ext4");

    /// <summary>The kernel command line the fixture boots with (the agent started by /init, quiet).</summary>
    public static string Cmdline => MicroVm.DefaultLinuxCmdline + " " + new AgentBootConfig().ToCmdline();

    /// <summary>
    /// The fixture, built (or found in the cache) on first use. Skips the test when KVM or the guest files are
    /// missing. A failed build fails every later caller in this process the same way (one boot attempt per run).
    /// </summary>
    public static LinuxGuestFixture Get(Action<string>? log = null)
    {
        KvmTestSupport.RequireKvm();
        foreach (var f in new[] { KernelPath, RootfsPath })
            TestEnvironment.RequireFile(f, "make kernel rootfs");
        lock (s_gate)
        {
            if (s_instance is not null)
            {
                if (log is not null) s_instance.Log = log;
                return s_instance;
            }
            if (s_failure is not null) throw new InvalidOperationException($"the Linux fixture could not be built earlier in this run: {s_failure.Message}", s_failure);
            try
            {
                s_instance = Prepare(log ?? (_ => { }));
                s_instance.Log = log ?? (_ => { });
                return s_instance;
            }
            catch (Exception e) when (e is not Xunit.SkipException)
            {
                s_failure = e;
                throw;
            }
        }
    }

    private static LinuxGuestFixture Prepare(Action<string> log)
    {
        long t0 = Stopwatch.GetTimestamp();
        string root = Path.Combine(CacheRoot(), "fixtures");
        System.IO.Directory.CreateDirectory(root);
        string hash = Hash();
        string dir = Path.Combine(root, hash);
        using var fileLock = AcquireLock(Path.Combine(root, hash + ".lock"));
        if (Validate(dir, log)) return new LinuxGuestFixture(dir, built: false, Stopwatch.GetElapsedTime(t0));
        Build(dir, log);
        if (!Validate(dir, log)) throw new InvalidOperationException($"the Linux fixture just built at {dir} does not load");
        return new LinuxGuestFixture(dir, built: true, Stopwatch.GetElapsedTime(t0));
    }

    /// <summary>Drops the cached snapshot (a restore refused it) so that the next <see cref="Get"/> in a new process rebuilds it.</summary>
    private void Discard()
    {
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static string CacheRoot() =>
        Environment.GetEnvironmentVariable("FIRESHARP_CACHE") is { Length: > 0 } c ? c
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "firesharp");

    /// <summary>SHA-256 over the kernel, the rootfs image, the FireSharp assembly and the fixture spec (16 hex digits).</summary>
    private static string Hash()
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        string spec = $"{FixtureVersion}\n{Cmdline}\nmem={MemoryMib}\ncid={GuestCid}\nroot=ro\n";
        sha.AppendData(Encoding.UTF8.GetBytes(spec));
        foreach (var file in new[] { KernelPath, RootfsPath, typeof(MicroVm).Assembly.Location })
        {
            using var stream = File.OpenRead(file);
            var buffer = new byte[1 << 20];
            int n;
            while ((n = stream.Read(buffer)) > 0) sha.AppendData(buffer, 0, n);
            sha.AppendData(Encoding.UTF8.GetBytes("\n--\n"));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
    }

    /// <summary>An exclusive lock between test processes (.NET takes an advisory lock for FileShare.None).</summary>
    private static FileStream AcquireLock(string path)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(LockTimeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (Stopwatch.GetTimestamp() < deadline)
            {
                Thread.Sleep(1000);
            }
        }
    }

    /// <summary>A cached fixture is used only if its snapshot loads (header, CRC, content) and names the current files.</summary>
    private static bool Validate(string dir, Action<string> log)
    {
        if (!System.IO.Directory.Exists(dir)) return false;
        try
        {
            SnapshotFiles.Verify(Path.Combine(dir, "snapshot"), SnapshotKeys.FromPath(Path.Combine(dir, "keys")));
            var snapshot = SnapshotReader.Load(Path.Combine(dir, "snapshot"));
            var devices = snapshot.State.Config.Devices;
            var root = devices.Single(d => d.Kind == BlockDeviceKind.Name);
            if (root.Settings[BlockDeviceKind.Keys.Path] != RealPath(RootfsPath)) throw new InvalidDataException("the root drive is another image");
            if (!devices.Any(d => d.Kind == VsockDeviceKind.Name)) throw new InvalidDataException("no vsock device");
            return true;
        }
        catch (Exception e) when (e is SnapshotException or InvalidDataException or InvalidOperationException or KeyNotFoundException
            or IOException or ArgumentException)
        {
            log($"fixture {dir} rejected ({e.Message}); rebuilding it");
            try { System.IO.Directory.Delete(dir, recursive: true); }
            catch (Exception d) when (d is IOException or UnauthorizedAccessException)
            {
                throw new InvalidOperationException($"cannot remove the rejected fixture {dir}: {d.Message}", d);
            }
            return false;
        }
    }

    private static string RealPath(string path) =>
        new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);

    /// <summary>Boots the guest until the agent is ready (retrying only the known PVM SIGSEGV), then snapshots it into <paramref name="dir"/>.</summary>
    private static void Build(string dir, Action<string> log)
    {
        string parent = Path.GetDirectoryName(dir)!;
        for (int attempt = 1; ; attempt++)
        {
            string work = Path.Combine("/tmp", "fsfx-" + Guid.NewGuid().ToString("N")[..10]);
            System.IO.Directory.CreateDirectory(work);
            var console = new MemorySerialSink();
            string partial = Path.Combine(parent, $".{Path.GetFileName(dir)}.partial-{Environment.ProcessId}-{attempt}");
            try
            {
                if (System.IO.Directory.Exists(partial)) System.IO.Directory.Delete(partial, recursive: true);
                System.IO.Directory.CreateDirectory(partial);
                var sw = Stopwatch.StartNew();
                var keys = SnapshotKeys.OpenOrCreate(Path.Combine(partial, "keys"));
                BootAndSnapshot(work, Path.Combine(partial, "snapshot"), console, keys.Signing);
                File.WriteAllText(Path.Combine(partial, "boot-console.txt"), console.GetText());
                File.WriteAllText(Path.Combine(partial, "README"),
                    $"FireSharp test fixture ({FixtureVersion}): {KernelPath} + {RealPath(RootfsPath)} (read-only root) + guest agent, "
                    + $"snapshotted after the agent's ready report. Built {DateTimeOffset.UtcNow:u} in {sw.Elapsed.TotalSeconds:F0} s. Safe to delete.\n");
                System.IO.Directory.Move(partial, dir);
                log($"fixture built in {sw.Elapsed.TotalSeconds:F1} s (PVM host, boot to agent-ready + snapshot): {dir}");
                return;
            }
            catch (Exception e) when (attempt < 3 && (e is KnownPvmSegfaultException || ShowsKnownPvmSegfault(console.GetText())))
            {
                log($"fixture boot {attempt}: a guest process died of SIGSEGV (known PVM issue, docs/pvm.md), booting again: {e.Message}");
            }
            finally
            {
                try { System.IO.Directory.Delete(work, recursive: true); } catch (IOException) { }
                try { if (System.IO.Directory.Exists(partial)) System.IO.Directory.Delete(partial, recursive: true); } catch (IOException) { }
            }
        }
    }

    /// <summary>
    /// The known PVM bug (docs/pvm.md): a guest process dies of SIGSEGV. The kernel says "segfault at" (not
    /// with <c>quiet</c>); the busybox shell that ran it says "Segmentation fault".
    /// </summary>
    public static bool ShowsKnownPvmSegfault(string console) =>
        console.Contains("segfault at", StringComparison.Ordinal) || console.Contains("Segmentation fault", StringComparison.Ordinal);

    private static void BootAndSnapshot(string work, string snapshotDir, MemorySerialSink console, SnapshotKey key)
    {
        string uds = Path.Combine(work, "v.sock");
        using var ready = AgentReadyListener.Bind(HybridVsock.GuestInitiatedPath(uds, AgentProtocol.DefaultReadyPort));
        using var vm = MicroVm.Create(new VmSpec
        {
            KernelPath = KernelPath,
            Cmdline = Cmdline,
            MemoryMib = MemoryMib,
            Serial = console,
            Drives = [new DriveSpec { Id = RootDriveId, Path = RealPath(RootfsPath), IsRoot = true, ReadOnly = true }],
            Vsock = new VsockDeviceSpec(GuestCid, uds),
        });
        vm.Start();
        try
        {
            using var cts = new CancellationTokenSource(BootTimeout);
            var waitReady = ready.WaitAsync(cts.Token);
            var first = Task.WhenAny(waitReady, vm.Exited).GetAwaiter().GetResult();
            if (first != waitReady)
                throw new InvalidOperationException($"the guest ended ({vm.Exited.Result}) before its agent was ready; console:\n{Tail(console.GetText())}");
            try
            {
                waitReady.GetAwaiter().GetResult();
            }
            catch (OperationCanceledException e)
            {
                throw new TimeoutException($"the agent was not ready after {BootTimeout.TotalMinutes} min; console:\n{Tail(console.GetText())}", e);
            }

            // One command before the snapshot: the agent works, and exec's pages are in the guest's page cache for every clone.
            using (var client = AgentClient.ConnectHybridVsockAsync(uds, cancellationToken: cts.Token).GetAwaiter().GetResult())
            {
                AgentExecResult result;
                int tries = 0;
                do
                {
                    // The known PVM SIGSEGV hits processes the agent runs too (signal 11, nothing on a quiet console).
                    result = client.ExecAsync(new AgentCommand("cat", "/proc/sys/kernel/random/boot_id"), cts.Token).GetAwaiter().GetResult();
                }
                while (result.Signal == 11 && ++tries < 3);
                if (result.Signal == 11) throw new KnownPvmSegfaultException("the warm-up command died of SIGSEGV 3 times");
                if (result.ExitCode != 0) throw new InvalidOperationException($"warm-up exec failed: {result.ExitCode}/{result.Signal}");
            }
            if (ShowsKnownPvmSegfault(console.GetText()))
                throw new InvalidOperationException("a guest process died of SIGSEGV before the snapshot");
            SnapshotWriter.Create(vm, snapshotDir, resume: false, signingKey: key);
        }
        finally
        {
            if (!vm.Exited.IsCompleted) vm.Stop();
        }
    }

    /// <summary>
    /// A running clone of the fixture: its own vsock socket (<c>/tmp/fsc-*/v.sock</c>) and console, connected to
    /// its agent (Hello answered). Restores are independent: call this concurrently for concurrent clones.
    /// </summary>
    /// <remarks>With <paramref name="reseed"/> the clone's kernel RNG gets fresh host entropy first (<see cref="AgentClient.ReseedAsync"/>);
    /// <see cref="LinuxClone.Reseeded"/> is null when the guest's agent predates that request.</remarks>
    public async Task<LinuxClone> RestoreCloneAsync(string? name = null, bool reseed = true, CancellationToken ct = default)
    {
        string dir = Path.Combine("/tmp", "fsc-" + Guid.NewGuid().ToString("N")[..10]);
        System.IO.Directory.CreateDirectory(dir);
        string uds = Path.Combine(dir, "v.sock");
        var console = new MemorySerialSink();
        long t0 = Stopwatch.GetTimestamp();
        MicroVm vm;
        try
        {
            vm = SnapshotRestore.Restore(SnapshotDir, new RestoreOverrides { Serial = console, VsockUdsPath = uds, Keys = SnapshotKeys.FromPath(KeysDir) });
        }
        catch (SnapshotException e) when (e.Reason is not (SnapshotErrorReason.IoError or SnapshotErrorReason.DiskFull))
        {
            Discard();
            System.IO.Directory.Delete(dir, recursive: true);
            throw new InvalidOperationException($"the restore refused the cached fixture {Directory} ({e.Reason}: {e.Message}); it was removed and the next run rebuilds it", e);
        }
        catch
        {
            System.IO.Directory.Delete(dir, recursive: true);
            throw;
        }
        var restored = Stopwatch.GetElapsedTime(t0);
        var clone = new LinuxClone(name ?? Path.GetFileName(dir), dir, vm, console, uds) { RestoreTime = restored };
        try
        {
            clone.Agent = await ConnectAgentAsync(clone, Log, ct).ConfigureAwait(false);
            clone.RestoreToAgent = Stopwatch.GetElapsedTime(t0);
            if (reseed)
            {
                try
                {
                    clone.Reseeded = await clone.Agent.ReseedAsync(hostname: clone.Name, cancellationToken: ct).ConfigureAwait(false);
                }
                catch (AgentException e) when (e.Failure == AgentFailure.Remote && e.Code == Proto.Agent.ErrorCode.UnknownRequest)
                {
                    clone.Reseeded = null;
                }
            }
            return clone;
        }
        catch
        {
            await clone.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Connects (CONNECT 52 + Hello) until the agent answers: right after the restore the guest is still handling the transport reset.</summary>
    public static async Task<AgentClient> ConnectAgentAsync(LinuxClone clone, Action<string>? log = null, CancellationToken ct = default)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(AgentConnectTimeout);
        Exception? last = null;
        while (!timeout.IsCancellationRequested && !clone.Vm.Exited.IsCompleted)
        {
            long started = Stopwatch.GetTimestamp();
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
                attempt.CancelAfter(TimeSpan.FromSeconds(20));
                return await AgentClient.ConnectHybridVsockAsync(clone.VsockPath, cancellationToken: attempt.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is AgentException or IOException or System.Net.Sockets.SocketException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                last = e;
                log?.Invoke($"{clone.Name}: agent connect attempt failed after {Stopwatch.GetElapsedTime(started).TotalMilliseconds:F0} ms: {e.GetType().Name}: {e.Message}");
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
            }
        }
        throw new InvalidOperationException(
            $"clone {clone.Name}: the agent did not answer ({(clone.Vm.Exited.IsCompleted ? $"VM ended: {clone.Vm.Exited.Result}" : "timeout")}; last: {last?.Message}); console:\n{Tail(clone.Console.GetText())}", last);
    }

    public static string Tail(string text) => text.Length > 3000 ? text[^3000..] : text;

    private sealed class KnownPvmSegfaultException(string message) : Exception(message);
}

/// <summary>A running clone of <see cref="LinuxGuestFixture"/>; disposing stops it and removes its socket directory.</summary>
public sealed class LinuxClone(string name, string directory, MicroVm vm, MemorySerialSink console, string vsockPath) : IAsyncDisposable
{
    public string Name { get; } = name;
    public string Directory { get; } = directory;
    public MicroVm Vm { get; } = vm;
    public MemorySerialSink Console { get; } = console;
    public string VsockPath { get; } = vsockPath;

    /// <summary>Connected to the guest agent (Hello done).</summary>
    public AgentClient Agent { get; internal set; } = null!;

    /// <summary>MicroVm.Restore alone; and from the start of the restore until the agent answered Hello.</summary>
    public TimeSpan RestoreTime { get; internal init; }
    public TimeSpan RestoreToAgent { get; internal set; }

    /// <summary>The reseed's outcome: true/false = RNDRESEEDCRNG succeeded or not; null = not asked, or the agent lacks the request.</summary>
    public bool? Reseeded { get; internal set; }

    /// <summary>Runs a command through the agent; stdout as text (asserting nothing).</summary>
    public async Task<(int? Code, string Stdout, string Stderr)> ExecAsync(CancellationToken ct, params string[] argv)
    {
        var r = await Agent.ExecAsync(new AgentCommand(argv) { Timeout = TimeSpan.FromMinutes(1) }, ct).ConfigureAwait(false);
        return (r.ExitCode, Encoding.UTF8.GetString(r.Stdout), Encoding.UTF8.GetString(r.Stderr));
    }

    public async ValueTask DisposeAsync()
    {
        if (Agent is not null) await Agent.DisposeAsync().ConfigureAwait(false);
        try
        {
            if (!Vm.Exited.IsCompleted) Vm.Stop(TimeSpan.FromSeconds(10));
        }
        catch (TimeoutException) { }
        Vm.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (IOException) { }
    }
}
