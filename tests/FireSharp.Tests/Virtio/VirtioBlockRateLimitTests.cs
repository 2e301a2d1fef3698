using FireSharp.Devices.RateLimiting;
using FireSharp.Devices.Virtio;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Time.Testing;

namespace FireSharp.Tests.Virtio;

/// <summary>virtio-blk behind a rate limiter on a fake clock: refused requests stay queued and complete when the timer fires.</summary>
public class VirtioBlockRateLimitTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    [Fact]
    public void Throttled_reads_wait_for_the_timer_and_all_complete_in_order()
    {
        var clock = new FakeTimeProvider();
        // 4 KiB per 100 ms.
        using var rig = new BlockRig(limiter: new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(4096, 0, 100), null), clock));
        var reqs = Enumerable.Range(0, 3).Select(i => rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, sector: (ulong)(8 * i), dataLength: 4096)).ToList();
        rig.Notify();
        Assert.Equal(1, rig.Driver.UsedIdx);
        Assert.Equal(0xEE, reqs[1].Status(rig.Memory)); // untouched: still the driver's sentinel
        clock.Advance(99 * Ms);
        Assert.Equal(1, rig.Driver.UsedIdx);
        clock.Advance(Ms);
        Assert.Equal(2, rig.Driver.UsedIdx);
        clock.Advance(100 * Ms);
        Assert.Equal(3, rig.Driver.UsedIdx);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(VirtioBlock.StatusOk, reqs[i].Status(rig.Memory));
            Assert.Equal(rig.Backend.Data.AsSpan(8 * i * 512, 4096).ToArray(), reqs[i].ReadData(rig.Memory));
        }
        Assert.Equal(2, rig.Block.RateLimiter.Deferred);
    }

    [Fact]
    public void Ops_bucket_counts_flushes_and_bandwidth_does_not()
    {
        var clock = new FakeTimeProvider();
        using var rig = new BlockRig(limiter: new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(512, 0, 1000), new TokenBucketSpec(2, 0, 1000)), clock));
        rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Driver.AddBlockRequest(VirtioBlock.RequestFlush, 0, 0);
        rig.Notify();
        Assert.Equal(2, rig.Backend.Flushes); // 2 ops; the 512-byte bandwidth bucket is untouched by flushes
        clock.Advance(500 * Ms);
        Assert.Equal(3, rig.Backend.Flushes);
    }

    [Fact]
    public void Update_on_a_running_device_lets_the_waiting_request_go()
    {
        var clock = new FakeTimeProvider();
        using var rig = new BlockRig(limiter: new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(512, 0, 60_000), null), clock));
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 512);
        rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 1, 512);
        rig.Notify();
        Assert.Equal(1, rig.Driver.UsedIdx);
        rig.Block.RateLimiter.Update(null);
        Assert.Equal(2, rig.Driver.UsedIdx);
    }

    [Fact]
    public void Snapshot_state_carries_the_limiter_and_what_is_left()
    {
        var clock = new FakeTimeProvider();
        var spec = new RateLimiterSpec(new TokenBucketSpec(8192, 1024, 100), new TokenBucketSpec(100, 0, 1000));
        byte[] state;
        using (var rig = new BlockRig(limiter: new RateLimiter(spec, clock)))
        {
            rig.Driver.AddBlockRequest(VirtioBlock.RequestIn, 0, 4096);
            rig.Notify();
            state = rig.Block.SaveState();
        }
        using var restored = new BlockRig(limiter: new RateLimiter(null, clock));
        restored.Block.RestoreState(state);
        Assert.Equal(spec, restored.Block.RateLimiter.Spec);
        var saved = restored.Block.RateLimiter.Save();
        Assert.Equal((8192L - 3072, 0L), (saved.Bandwidth!.Budget, saved.Bandwidth.OneTimeBurst));
        Assert.Equal(99, saved.Ops!.Budget);
    }

    [Fact]
    public void Format_1_state_keeps_the_configured_limiter()
    {
        var spec = new RateLimiterSpec(null, new TokenBucketSpec(10, 0, 1000));
        using var rig = new BlockRig(limiter: new RateLimiter(spec));
        var v2 = rig.Block.SaveState();
        // Format 1 is format 2 without the limiter's bytes (two absent buckets would be 2 bytes; this one has ops).
        using var plain = new BlockRig();
        var v1 = plain.Block.SaveState()[..^2];
        v1[0] = 1;
        rig.Block.RestoreState(v1);
        Assert.Equal(spec, rig.Block.RateLimiter.Spec);
        Assert.NotEqual(v1.Length, v2.Length);
    }

    [Theory]
    [InlineData("disk.img:bps=64M", 8L * 1024 * 1024, 125L, null)]       // 64 MiB/s: 8 MiB per 125 ms
    [InlineData("disk.img:ro:iops=1K:bps=7", 7L, 1000L, 128L)]           // 7/s: 7 per second; 1024/s: 128 per 125 ms
    [InlineData("disk.img:iops=20:bps=1000", 100L, 100L, 2L)]            // 20/s: 2 per 100 ms; 1000/s: 100 per 100 ms
    public void Drive_syntax_takes_bps_and_iops_with_suffixes(string text, long? bwSize, long? bwRefill, long? opsSize)
    {
        var d = DriveSpec.Parse(text);
        Assert.Equal("disk.img", d.Path);
        Assert.Equal(bwSize, d.RateLimiter!.Bandwidth?.Size);
        Assert.Equal(bwRefill, d.RateLimiter.Bandwidth?.RefillTimeMs);
        Assert.Equal(opsSize, d.RateLimiter.Ops?.Size);
    }

    [Theory]
    [InlineData("disk.img:bps=0")]
    [InlineData("disk.img:bps=-5")]
    [InlineData("disk.img:bps=12X")]
    [InlineData("disk.img:bps=99999999999G")]
    [InlineData("disk.img:iops=")]
    public void Bad_drive_rates_are_refused(string text) =>
        Assert.Throws<RateLimiterConfigException>(() => DriveSpec.Parse(text));

    [Fact]
    public void A_bad_limiter_in_a_drive_list_names_its_field()
    {
        var e = Assert.Throws<RateLimiterConfigException>(() => DriveSpec.Validate(
        [
            new DriveSpec { Path = "/nonexistent/a" },
            new DriveSpec { Path = "/nonexistent/b", RateLimiter = new RateLimiterSpec(new TokenBucketSpec(100, 0, 0), null) },
        ]));
        Assert.Equal("drive[1].rate_limiter.bandwidth.refill_time_ms", e.Field);
    }

    [SkippableFact]
    public void Vm_updates_a_drive_limiter_by_id_and_refuses_unknown_devices()
    {
        KvmTestSupport.RequireKvm();
        string image = Path.Combine(Directory.CreateTempSubdirectory("fs-blk-upd-").FullName, "d.img");
        File.WriteAllBytes(image, new byte[1 << 20]);
        using var vm = FireSharp.Vm.MicroVm.Create(new FireSharp.Vm.VmSpec
        {
            KernelPath = TestPaths.Guest("counter"),
            MemoryMib = 32,
            Drives = [new DriveSpec { Path = image, Id = "data" }],
        });
        var spec = new RateLimiterSpec(new TokenBucketSpec(1 << 20, 0, 100), null);
        vm.UpdateRateLimiter(RateLimiterTarget.Drive, "data", spec);
        Assert.Equal(spec, vm.Devices.OfType<VirtioBlock>().Single().RateLimiter.Spec);
        Assert.Equal(RateLimiterConfigError.UnknownDevice,
            Assert.Throws<RateLimiterConfigException>(() => vm.UpdateRateLimiter(RateLimiterTarget.Drive, "nope", spec)).Reason);
        Assert.Equal(RateLimiterConfigError.UnknownDevice,
            Assert.Throws<RateLimiterConfigException>(() => vm.UpdateRateLimiter(RateLimiterTarget.NetworkRx, "data", spec)).Reason);
        Assert.Throws<RateLimiterConfigException>(() => vm.UpdateRateLimiter(RateLimiterTarget.Drive, "data", new RateLimiterSpec(null, new TokenBucketSpec(0, 0, 1))));
        vm.UpdateRateLimiter(RateLimiterTarget.Drive, "data", null);
        Assert.Null(vm.Devices.OfType<VirtioBlock>().Single().RateLimiter.Spec);
    }
}
