using FireSharp.Daemon;
using FireSharp.Daemon.Functions;
using FireSharp.Pool;
using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Tests.Functions;

/// <summary>
/// FunctionManager waits for its records' lock asynchronously: a read that has to wait hands back a pending task
/// at once (no thread blocked on the lock) and can be cancelled while it waits.
/// </summary>
public sealed class FunctionManagerAsyncTests : IAsyncLifetime
{
    private static readonly TimeSpan Live = TimeSpan.FromSeconds(60);
    private readonly string _dir = TestPaths.TempDir();
    private readonly FunctionRecords _records = new();
    private FunctionPool _pool = null!;
    private FunctionManager _manager = null!;

    public async Task InitializeAsync()
    {
        var options = new DaemonOptions { StateDir = _dir, Socket = Path.Combine(_dir, "api.sock"), Cgroups = FireSharp.Daemon.Isolation.CgroupMode.Off };
        foreach (var f in (string[])["vmlinux", "rootfs.ext4", "code.ext4"])
            await File.WriteAllTextAsync(Path.Combine(_dir, f), "stand-in");
        _pool = new FunctionPool(new FakeFunctionVmFactory());
        _manager = new FunctionManager(_pool, new FunctionStore(options.FunctionsDir, NullLogger<FunctionStore>.Instance), _records,
            options, new HostLimits(8UL << 30, 64), NullLogger<FunctionManager>.Instance);
        await _manager.CreateAsync(new CreateFunctionRequest
        {
            Spec = new FunctionSpec
            {
                Name = "f",
                Image = new FunctionImage { KernelPath = Path.Combine(_dir, "vmlinux"), RootfsPath = Path.Combine(_dir, "rootfs.ext4") },
                Code = new FunctionCode { ImagePath = Path.Combine(_dir, "code.ext4") },
                Handler = "function.handler",
            },
        }, CancellationToken.None).WaitAsync(Live);
    }

    public async Task DisposeAsync()
    {
        await _pool.DisposeAsync().AsTask().WaitAsync(Live);
        _records.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>
    /// Calls <paramref name="call"/> on a thread-pool thread and returns the task it handed back. A call that
    /// blocked its thread until the records' lock is free would not return while the test holds the lock: the
    /// liveness bound then fails the test instead of hanging it.
    /// </summary>
    private static async Task<Task<T>> Returned<T>(Func<Task<T>> call) =>
        await Task.Factory.StartNew(call, CancellationToken.None, TaskCreationOptions.None, TaskScheduler.Default).WaitAsync(Live);

    [Fact]
    public async Task Get_and_List_wait_for_the_records_without_blocking_a_thread()
    {
        Task<Function> get;
        Task<ListFunctionsResponse> list;
        using (await _records.LockAsync(CancellationToken.None).WaitAsync(Live)) // a registry change in progress
        {
            get = await Returned(() => _manager.GetAsync("f", CancellationToken.None));
            list = await Returned(() => _manager.ListAsync(CancellationToken.None));
            Assert.False(get.IsCompleted);
            Assert.False(list.IsCompleted);
        }
        Assert.Equal("f", (await get.WaitAsync(Live)).Spec.Name);
        Assert.Equal("f", Assert.Single((await list.WaitAsync(Live)).Functions).Spec.Name);
    }

    [Fact]
    public async Task A_read_waiting_for_the_records_can_be_cancelled()
    {
        using var cancel = new CancellationTokenSource();
        using (await _records.LockAsync(CancellationToken.None).WaitAsync(Live))
        {
            var get = await Returned(() => _manager.GetAsync("f", cancel.Token));
            var list = await Returned(() => _manager.ListAsync(cancel.Token));
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => get.WaitAsync(Live));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => list.WaitAsync(Live));
        }
        // The lock was not taken by the cancelled reads: the next one goes through.
        Assert.Equal("f", (await _manager.GetAsync("f", CancellationToken.None).WaitAsync(Live)).Spec.Name);
    }
}
