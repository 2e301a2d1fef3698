using FireSharp.Daemon;
using FireSharp.Daemon.Workers;
using FireSharp.Proto.Worker;
using FireSharp.Tests.Support;

namespace FireSharp.Tests.Api;

/// <summary>
/// An unjailed worker process (Jail=false, or a daemon that is not root) opens its drives by path: it does so
/// through the daemon's path policy (CreateMachine.path_policy), so what it opens is checked on the fd it then
/// uses, not only by the daemon beforehand. Through a real firesharp-vmm process and its socket.
/// </summary>
[Collection("kvm")]
public sealed class WorkerPathPolicyTests : IAsyncLifetime
{
    private readonly string _dir = ApiTestServer.NewStateDir();
    private WorkerProcess _worker = null!;
    private WorkerClient _client = null!;

    private string Root => Path.Combine(_dir, "root");

    public async Task InitializeAsync()
    {
        KvmTestSupport.RequireKvm();
        Directory.CreateDirectory(Root);
        string socket = Path.Combine(_dir, "w.sock");
        var launcher = new ProcessWorkerLauncher(Path.Combine(TestPaths.RepoRoot, "build", "firesharp-vmm"));
        _worker = await launcher.LaunchAsync(new WorkerLaunch("p", socket, Path.Combine(_dir, "w.log")), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));
        _client = new WorkerClient(socket);
    }

    public async Task DisposeAsync()
    {
        if (_client is not null) await _client.DisposeAsync();
        if (_worker is not null)
        {
            _worker.Kill();
            await _worker.Exited.WaitAsync(TimeSpan.FromSeconds(30));
        }
        Directory.Delete(_dir, recursive: true);
    }

    private CreateMachine Create(string? drive)
    {
        var c = new CreateMachine { Id = "p", KernelPath = Kernel(), MemMib = 16, Vcpus = 1 };
        if (drive is not null) c.Drives.Add(new Drive { Id = "data", Path = drive });
        c.PathPolicy = new WorkerPathPolicy { Roots = { Root } };
        return c;
    }

    /// <summary>The hello guest, copied under the root (the worker reads its kernel through the policy too).</summary>
    private string Kernel()
    {
        string kernel = Path.Combine(Root, "hello.elf");
        if (!File.Exists(kernel)) File.Copy(TestPaths.Guest("hello"), kernel);
        return kernel;
    }

    [SkippableFact]
    public async Task The_kernel_and_initrd_are_read_through_the_policy_so_a_symlink_leading_out_is_refused()
    {
        string outside = Path.Combine(_dir, "outside.elf");
        File.Copy(TestPaths.Guest("hello"), outside);
        string link = Path.Combine(Root, "escape.elf");
        File.CreateSymbolicLink(link, outside);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var create = Create(null);
        create.KernelPath = link;
        var e = await Assert.ThrowsAsync<VmApiException>(() => _client.CallAsync(new WorkerRequest { Create = create }, timeout.Token));
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("spec.kernel.path", e.Field);
        Assert.Contains("path policy", e.Message, StringComparison.Ordinal);
        // An initrd outside the roots, by name: refused on its own field.
        create = Create(null);
        create.InitrdPath = outside;
        e = await Assert.ThrowsAsync<VmApiException>(() => _client.CallAsync(new WorkerRequest { Create = create }, timeout.Token));
        Assert.Equal("spec.kernel.initrd_path", e.Field);
        Assert.Contains("outside the allowed roots", e.Message, StringComparison.Ordinal);
        // The kernel inside the root is used.
        var status = await _client.CallAsync(new WorkerRequest { Create = Create(null) }, timeout.Token);
        Assert.Equal(MachineState.Created, status.State);
    }

    [SkippableFact]
    public async Task A_drive_whose_symlink_leads_out_of_the_roots_is_refused_by_the_worker_and_one_inside_is_used()
    {
        string outside = Path.Combine(_dir, "outside.img");
        File.WriteAllBytes(outside, new byte[4096]);
        string link = Path.Combine(Root, "escape.img");
        File.CreateSymbolicLink(link, outside);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var e = await Assert.ThrowsAsync<VmApiException>(() => _client.CallAsync(new WorkerRequest { Create = Create(link) }, timeout.Token));
        Assert.Equal(VmErrorKind.InvalidArgument, e.Kind);
        Assert.Equal("spec.drives[0].path", e.Field);
        Assert.Contains("path policy", e.Message, StringComparison.Ordinal);

        string inside = Path.Combine(Root, "data.img");
        File.WriteAllBytes(inside, new byte[4096]);
        var status = await _client.CallAsync(new WorkerRequest { Create = Create(inside) }, timeout.Token);
        Assert.Equal(MachineState.Created, status.State);
    }
}
