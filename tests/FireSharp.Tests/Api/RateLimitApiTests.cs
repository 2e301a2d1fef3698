using FireSharp.Devices.RateLimiting;
using FireSharp.Proto.V1;
using Grpc.Core;
using Xunit.Abstractions;
using ApiRateLimiter = FireSharp.Proto.V1.RateLimiter;
using TokenBucket = FireSharp.Proto.V1.TokenBucket;

namespace FireSharp.Tests.Api;

/// <summary>
/// Rate limiters through the daemon (issue 12): DriveSpec.rate_limiter reaches the worker's device, UpdateRateLimiters
/// replaces it live (device and spec), a snapshot keeps it and a restored VM has it, and bad input is a typed
/// InvalidArgument naming the field, with nothing changed.
/// </summary>
[Collection("kvm")]
public sealed class RateLimitApiTests(ITestOutputHelper output)
{
    private static ApiRateLimiter Limiter(long bwSize, long refillMs, long? opsSize = null, long burst = 0) => new()
    {
        Bandwidth = new TokenBucket { Size = bwSize, OneTimeBurst = burst, RefillTimeMs = refillMs },
        Ops = opsSize is { } o ? new TokenBucket { Size = o, RefillTimeMs = 1000 } : null,
    };

    private static string Image()
    {
        string path = Path.Combine(Directory.CreateTempSubdirectory("fs-rl-api-").FullName, "data.img");
        File.WriteAllBytes(path, new byte[1 << 20]);
        return path;
    }

    private static RateLimiterSpec? DeviceLimiter(ApiTestServer s, string vmId, RateLimiterTarget target, string deviceId) =>
        s.Launcher.MachineOf(s.Options.WorkerSocket(vmId))!.Devices.RateLimiter(target, deviceId).Spec;

    [SkippableFact]
    public async Task Drive_limiter_is_created_updated_live_kept_in_a_snapshot_and_restored()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        var spec = ApiTestServer.Spec("counter");
        spec.Drives.Add(new DriveSpec { Id = "data", Path = Image(), RateLimiter = Limiter(1 << 20, 100, opsSize: 500, burst: 4096) });
        var vm = await c.CreateVmAsync(new CreateVmRequest { Id = "rl", Spec = spec, Start = true });
        Assert.Equal(Limiter(1 << 20, 100, opsSize: 500, burst: 4096), vm.Spec.Drives[0].RateLimiter);
        Assert.Equal(new RateLimiterSpec(new TokenBucketSpec(1 << 20, 4096, 100), new TokenBucketSpec(500, 0, 1000)),
            DeviceLimiter(s, "rl", RateLimiterTarget.Drive, "data"));
        await s.ReadConsoleUntilAsync("rl", "COUNTING");

        // Live: the running VM's device gets the new buckets, and the spec shows them.
        var updated = await c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest
        {
            Id = "rl", Drives = { new DriveRateLimiterUpdate { DriveId = "data", RateLimiter = Limiter(8 << 20, 125) } },
        });
        Assert.Equal(VmState.Running, updated.State);
        Assert.Equal(Limiter(8 << 20, 125), updated.Spec.Drives[0].RateLimiter);
        Assert.Equal(Limiter(8 << 20, 125), (await c.GetVmAsync(new GetVmRequest { Id = "rl" })).Spec.Drives[0].RateLimiter);
        var expected = new RateLimiterSpec(new TokenBucketSpec(8 << 20, 0, 125), null);
        Assert.Equal(expected, DeviceLimiter(s, "rl", RateLimiterTarget.Drive, "data"));

        // Kept in a snapshot, and the restored VM's device has it.
        string snap = Path.Combine(s.Options.StateDir, "snap");
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "rl", Dir = snap });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "rl", Force = true });
        var clone = await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "rl-clone" });
        Assert.Equal(VmState.Running, clone.State);
        Assert.Equal(expected, DeviceLimiter(s, "rl-clone", RateLimiterTarget.Drive, "data"));

        // An empty limiter removes the limit.
        await c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest
        {
            Id = "rl-clone", Drives = { new DriveRateLimiterUpdate { DriveId = "data", RateLimiter = new ApiRateLimiter() } },
        });
        Assert.Null(DeviceLimiter(s, "rl-clone", RateLimiterTarget.Drive, "data"));
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "rl-clone", Force = true });
    }

    [SkippableFact]
    public async Task Entropy_limiter_is_created_updated_live_and_kept_in_a_snapshot()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;
        var spec = ApiTestServer.Spec("counter");
        spec.Rng = true;
        spec.RngRateLimiter = Limiter(4096, 1000, opsSize: 10);
        var vm = await c.CreateVmAsync(new CreateVmRequest { Id = "rng", Spec = spec, Start = true });
        Assert.Equal(Limiter(4096, 1000, opsSize: 10), vm.Spec.RngRateLimiter);
        Assert.Equal(new RateLimiterSpec(new TokenBucketSpec(4096, 0, 1000), new TokenBucketSpec(10, 0, 1000)),
            DeviceLimiter(s, "rng", RateLimiterTarget.Entropy, ""));

        var updated = await c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest { Id = "rng", RngRateLimiter = Limiter(1 << 20, 100) });
        Assert.Equal(Limiter(1 << 20, 100), updated.Spec.RngRateLimiter);
        var expected = new RateLimiterSpec(new TokenBucketSpec(1 << 20, 0, 100), null);
        Assert.Equal(expected, DeviceLimiter(s, "rng", RateLimiterTarget.Entropy, ""));

        string snap = Path.Combine(s.Options.StateDir, "snap");
        await c.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "rng", Dir = snap });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "rng", Force = true });
        await c.RestoreVmAsync(new RestoreVmRequest { Dir = snap, Id = "rng-clone" });
        Assert.Equal(expected, DeviceLimiter(s, "rng-clone", RateLimiterTarget.Entropy, ""));

        await c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest { Id = "rng-clone", RngRateLimiter = new ApiRateLimiter() });
        Assert.Null(DeviceLimiter(s, "rng-clone", RateLimiterTarget.Entropy, ""));

        // Refused: a limiter without the device, a bad bucket, and an update of a VM without the device.
        var noRng = ApiTestServer.Spec("counter");
        noRng.RngRateLimiter = Limiter(4096, 1000);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = noRng }).ResponseAsync, "spec.rng_rate_limiter");
        var badBucket = ApiTestServer.Spec("counter");
        badBucket.Rng = true;
        badBucket.RngRateLimiter = Limiter(0, 1000);
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = badBucket }).ResponseAsync,
            "spec.rng_rate_limiter.bandwidth.size");
        await c.CreateVmAsync(new CreateVmRequest { Id = "plain", Spec = ApiTestServer.Spec("counter") });
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument,
            () => c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest { Id = "plain", RngRateLimiter = Limiter(4096, 1000) }).ResponseAsync, "rng_rate_limiter");
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "rng-clone", Force = true });
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "plain", Force = true });
    }

    [SkippableFact]
    public async Task Bad_limiters_are_invalid_arguments_naming_the_field_and_change_nothing()
    {
        await using var s = await ApiTestServer.StartAsync(output);
        var c = s.Client;

        async Task CreateFails(ApiRateLimiter limiter, string field)
        {
            var spec = ApiTestServer.Spec("counter");
            spec.Drives.Add(new DriveSpec { Id = "data", Path = Image(), RateLimiter = limiter });
            await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = spec }).ResponseAsync, field);
        }
        await CreateFails(Limiter(-1, 100), "spec.drives[0].rate_limiter.bandwidth.size");
        await CreateFails(Limiter(1000, 0), "spec.drives[0].rate_limiter.bandwidth.refill_time_ms");
        await CreateFails(Limiter(1000, 100, burst: -5), "spec.drives[0].rate_limiter.bandwidth.one_time_burst");
        await CreateFails(Limiter(1000, TokenBucketSpec.MaxRefillTimeMs + 1), "spec.drives[0].rate_limiter.bandwidth.refill_time_ms");
        await CreateFails(new ApiRateLimiter { Ops = new TokenBucket { Size = 0, RefillTimeMs = 10 } }, "spec.drives[0].rate_limiter.ops.size");
        var nicSpec = ApiTestServer.Spec("counter");
        nicSpec.NetworkInterfaces.Add(new NetworkInterfaceSpec { Id = "eth0", Auto = true, TxRateLimiter = Limiter(1000, -3) });
        await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.CreateVmAsync(new CreateVmRequest { Id = "bad", Spec = nicSpec }).ResponseAsync,
            "spec.network_interfaces[0].tx_rate_limiter.bandwidth.refill_time_ms");
        Assert.Empty((await c.ListVmsAsync(new ListVmsRequest())).Vms);

        var good = ApiTestServer.Spec("counter");
        good.Drives.Add(new DriveSpec { Id = "data", Path = Image(), RateLimiter = Limiter(4096, 100) });
        await c.CreateVmAsync(new CreateVmRequest { Id = "vm", Spec = good, Start = true });
        var before = DeviceLimiter(s, "vm", RateLimiterTarget.Drive, "data");

        async Task UpdateFails(UpdateRateLimitersRequest request, string field) =>
            await RpcAssert.FailsAsync(StatusCode.InvalidArgument, () => c.UpdateRateLimitersAsync(request).ResponseAsync, field);
        // A good change next to a bad one: neither is applied.
        await UpdateFails(new UpdateRateLimitersRequest
        {
            Id = "vm",
            Drives =
            {
                new DriveRateLimiterUpdate { DriveId = "data", RateLimiter = Limiter(1 << 20, 100) },
                new DriveRateLimiterUpdate { DriveId = "nope", RateLimiter = Limiter(1 << 20, 100) },
            },
        }, "drives[1].drive_id");
        await UpdateFails(new UpdateRateLimitersRequest
        {
            Id = "vm", Drives = { new DriveRateLimiterUpdate { DriveId = "data", RateLimiter = Limiter(long.MinValue, 100) } },
        }, "drives[0].rate_limiter.bandwidth.size");
        await UpdateFails(new UpdateRateLimitersRequest
        {
            Id = "vm", NetworkInterfaces = { new NetworkInterfaceRateLimiterUpdate { IfaceId = "eth0", RxRateLimiter = Limiter(100, 100) } },
        }, "network_interfaces[0].iface_id");
        await UpdateFails(new UpdateRateLimitersRequest
        {
            Id = "vm", NetworkInterfaces = { new NetworkInterfaceRateLimiterUpdate { IfaceId = "eth0" } },
        }, "network_interfaces[0]");
        await UpdateFails(new UpdateRateLimitersRequest { Id = "vm" }, "drives");
        await RpcAssert.FailsAsync(StatusCode.NotFound, () => c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest
        {
            Id = "ghost", Drives = { new DriveRateLimiterUpdate { DriveId = "data" } },
        }).ResponseAsync);
        Assert.Equal(before, DeviceLimiter(s, "vm", RateLimiterTarget.Drive, "data"));
        Assert.Equal(Limiter(4096, 100), (await c.GetVmAsync(new GetVmRequest { Id = "vm" })).Spec.Drives[0].RateLimiter);

        // A stopped VM has no worker to change.
        await c.StopVmAsync(new StopVmRequest { Id = "vm", Force = true });
        await RpcAssert.FailsAsync(StatusCode.FailedPrecondition, () => c.UpdateRateLimitersAsync(new UpdateRateLimitersRequest
        {
            Id = "vm", Drives = { new DriveRateLimiterUpdate { DriveId = "data" } },
        }).ResponseAsync);
        await c.DeleteVmAsync(new DeleteVmRequest { Id = "vm", Force = true });
    }
}
