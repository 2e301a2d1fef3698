using FireSharp.Devices.RateLimiting;
using FireSharp.Devices.Virtio;
using FireSharp.Devices.Virtio.Net;
using FireSharp.Tests.Virtio.Rng;
using Microsoft.Extensions.Time.Testing;

namespace FireSharp.Tests.Virtio.Net;

/// <summary>virtio-net's RX and TX limiters and virtio-rng's, on a fake clock: refused work waits for the timer, nothing is dropped.</summary>
public class NetRngRateLimitTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    private static RateLimiter OnePer100Ms(FakeTimeProvider clock) =>
        new(new RateLimiterSpec(null, new TokenBucketSpec(1, 0, 100)), clock);

    [Fact]
    public void Rx_limiter_holds_the_frame_stops_reading_the_tap_and_delivers_everything_in_order()
    {
        var clock = new FakeTimeProvider();
        using var rig = new NetRig(rx: OnePer100Ms(clock));
        rig.AddRxBuffers(4, 2048);
        for (int i = 0; i < 3; i++) rig.Peer.Send(NetRig.Frame(200, 30 + i));
        var got = rig.TakeRx();
        Assert.Single(got);
        Assert.True(rig.Device.HasPendingFrame);
        Assert.False(rig.Device.WatchingBackend); // back-pressure: the other frame waits in the tap's queue
        clock.Advance(99 * Ms);
        Assert.Empty(rig.TakeRx());
        clock.Advance(Ms);
        got.AddRange(rig.TakeRx());
        clock.Advance(100 * Ms);
        got.AddRange(rig.TakeRx());
        Assert.Equal(3, got.Count);
        for (int i = 0; i < 3; i++) Assert.Equal(NetRig.Frame(200, 30 + i)[NetProtocol.HeaderSize..], got[i][NetProtocol.HeaderSize..]);
        Assert.Equal(0, rig.Device.Counters.RxDropped);
        Assert.True(rig.Device.WatchingBackend);
    }

    [Fact]
    public void Tx_limiter_keeps_chains_in_the_queue_until_the_timer_and_sends_all()
    {
        var clock = new FakeTimeProvider();
        using var rig = new NetRig(tx: OnePer100Ms(clock));
        Assert.Single(rig.TransmitAll(NetRig.Frame(100, 1)));
        Assert.Empty(rig.TransmitAll(NetRig.Frame(100, 2)));
        Assert.NotNull(rig.ReceiveFromGuest());
        Assert.Null(rig.ReceiveFromGuest());
        clock.Advance(100 * Ms);
        Assert.Single(rig.TakeTransmitted());
        Assert.Equal(NetRig.Frame(100, 2)[NetProtocol.HeaderSize..], rig.ReceiveFromGuest()?[NetProtocol.HeaderSize..]);
        Assert.Equal((2L, 0L), (rig.Device.Counters.TxFrames, rig.Device.Counters.TxDropped));
    }

    [Fact]
    public void Net_state_keeps_both_limiters()
    {
        var clock = new FakeTimeProvider();
        var rxSpec = new RateLimiterSpec(new TokenBucketSpec(1 << 20, 0, 100), null);
        var txSpec = new RateLimiterSpec(null, new TokenBucketSpec(500, 10, 1000));
        byte[] state;
        using (var a = new NetRig(rx: new RateLimiter(rxSpec, clock), tx: new RateLimiter(txSpec, clock))) state = a.Device.SaveState();
        using var b = new NetRig();
        b.Device.RestoreState(state);
        Assert.Equal(rxSpec, b.Device.RxLimiter.Spec);
        Assert.Equal(txSpec, b.Device.TxLimiter.Spec);
        Assert.Throws<InvalidDataException>(() => b.Device.RestoreState(state.AsSpan(..^1)));
    }

    [Theory]
    [InlineData("auto,bps=1M", 1L << 20, 1L << 20, null, null)]
    [InlineData("auto,bps=1M,tx-bps=2M,rx-iops=100", 1L << 20, 2L << 20, 100L, null)]
    [InlineData("auto,mac=02:fc:00:00:00:01,tx-iops=1K", null, null, null, 1024L)]
    public void Net_syntax_takes_per_direction_rates(string text, long? rxBps, long? txBps, long? rxIops, long? txIops)
    {
        var n = NetworkInterfaceSpec.Parse(text, "eth0");
        static long? PerSecond(TokenBucketSpec? b) => b is null ? null : b.Size * 1000 / b.RefillTimeMs;
        Assert.Equal(rxBps, PerSecond(n.RxRateLimiter?.Bandwidth));
        Assert.Equal(txBps, PerSecond(n.TxRateLimiter?.Bandwidth));
        Assert.Equal(rxIops, PerSecond(n.RxRateLimiter?.Ops));
        Assert.Equal(txIops, PerSecond(n.TxRateLimiter?.Ops));
    }

    [Theory]
    [InlineData("auto,bps=0")]
    [InlineData("auto,rx-bps=1M,rx-bps=2M")]
    [InlineData("auto,tx-iops=lots")]
    public void Bad_net_rates_are_refused(string text) =>
        Assert.Throws<RateLimiterConfigException>(() => NetworkInterfaceSpec.Parse(text, "eth0"));

    [Fact]
    public void Rng_limiter_defers_requests_until_its_timer()
    {
        var clock = new FakeTimeProvider();
        using var rig = new RngRig(tokens: new RateLimiter(new RateLimiterSpec(new TokenBucketSpec(64, 0, 100), null), clock));
        ulong a = rig.Driver.Alloc(64), b = rig.Driver.Alloc(64);
        rig.Driver.AddChain(new Buf(a, 64, true));
        rig.Driver.AddChain(new Buf(b, 64, true));
        rig.Notify();
        Assert.Equal(1, rig.Driver.UsedIdx);
        clock.Advance(100 * Ms);
        Assert.Equal(2, rig.Driver.UsedIdx);
        Assert.Equal((2L, 128L), (rig.Rng.Counters.Requests, rig.Rng.Counters.Bytes));

        var state = rig.Rng.SaveState();
        using var other = new RngRig();
        other.Rng.RestoreState(state);
        Assert.Equal(rig.Rng.RateLimiter.Spec, other.Rng.RateLimiter.Spec);
        other.Rng.RestoreState([1]); // format 1 still restores
    }
}
