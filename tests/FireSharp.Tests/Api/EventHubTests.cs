using FireSharp.Daemon.Vms;

namespace FireSharp.Tests.Api;

/// <summary>A watcher that falls behind loses its oldest events, never the newest and never a VM's final one.</summary>
public sealed class EventHubTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static VmLifecycleEvent Changed(string id, int n) => new() { Kind = VmEventKind.StateChanged, Id = id, Message = n.ToString(System.Globalization.CultureInfo.InvariantCulture) };

    private static async Task<List<VmLifecycleEvent>> DrainAsync(EventHub hub, EventHub.Watcher watcher)
    {
        hub.CompleteAll();
        var seen = new List<VmLifecycleEvent>();
        await foreach (var ev in watcher.ReadAllAsync(CancellationToken.None).WithCancellation(CancellationToken.None)) seen.Add(ev);
        return seen;
    }

    [Fact]
    public async Task A_watcher_that_falls_behind_loses_the_oldest_events_and_is_told_how_many()
    {
        var hub = new EventHub();
        using var watcher = hub.Subscribe(null);
        int total = EventHub.WatcherBacklog + 10;
        for (int i = 0; i < total; i++) hub.Publish(Changed("a", i));
        var seen = await DrainAsync(hub, watcher).WaitAsync(Timeout);
        Assert.Equal(VmEventKind.Dropped, seen[0].Kind);
        Assert.Equal(10, seen[0].Dropped);
        Assert.Equal(EventHub.WatcherBacklog, seen.Count - 1);
        Assert.Equal("10", seen[1].Message); // the oldest went
        Assert.Equal((total - 1).ToString(System.Globalization.CultureInfo.InvariantCulture), seen[^1].Message); // the newest stayed
    }

    [Fact]
    public async Task A_vms_final_events_reach_a_watcher_however_far_behind_it_is()
    {
        var hub = new EventHub();
        using var all = hub.Subscribe(null);
        using var one = hub.Subscribe("a");
        // A full backlog before the final events (so they come when the queue is full), and a flood after them
        // (so they would be the oldest): another VM's events for the watch-all watcher, more of this VM's for the other.
        for (int i = 0; i < EventHub.WatcherBacklog; i++) hub.Publish(Changed("a", i));
        hub.Publish(new VmLifecycleEvent { Kind = VmEventKind.Exited, Id = "a", Message = "guest ended" });
        hub.Publish(new VmLifecycleEvent { Kind = VmEventKind.Deleted, Id = "a", Message = "deleted" });
        for (int i = 1; i <= 3 * EventHub.WatcherBacklog; i++)
        {
            hub.Publish(Changed("b", i));
            if (i % 2 == 0) hub.Publish(Changed("a", i));
        }
        foreach (var watcher in new[] { all, one })
        {
            var seen = await DrainAsync(hub, watcher).WaitAsync(Timeout);
            Assert.Contains(seen, e => e.Kind == VmEventKind.Exited && e.Id == "a");
            Assert.Contains(seen, e => e.Kind == VmEventKind.Deleted && e.Id == "a");
            Assert.True(seen.FindIndex(e => e.Kind == VmEventKind.Exited) < seen.FindIndex(e => e.Kind == VmEventKind.Deleted));
            Assert.Equal(VmEventKind.Dropped, seen[0].Kind);
            Assert.True(seen.Count <= EventHub.WatcherBacklog + 3, $"{seen.Count} events queued: the backlog is not bounded");
        }
    }
}
