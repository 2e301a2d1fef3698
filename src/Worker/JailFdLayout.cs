using FireSharp.Proto.Worker;

namespace FireSharp.Worker;

/// <summary>
/// The one statement of the order of the fds jail stage 1 hands to stage 2 (after the ready pipe): one per
/// <see cref="JailPlan.Files"/> entry (the drives, then the verified snapshot files stage 1 added), then one per
/// by-fd mount (kernel, initrd, in plan order), then one per <see cref="JailPlan.Taps"/> entry. -1 marks one not
/// opened. Stage 1 fills its list at these indices and stage 2 reads them back from the same plan (as stage 1
/// rewrote it), so the two can never disagree.
/// </summary>
internal readonly record struct JailFdLayout(int Files, int ByFdMounts, int Taps)
{
    public static JailFdLayout Of(JailPlan plan) => new(plan.Files.Count, plan.Mounts.Count(m => m.ByFd), plan.Taps.Count);

    public int Count => Files + ByFdMounts + Taps;

    /// <summary>The fd of <see cref="JailPlan.Files"/>[<paramref name="i"/>].</summary>
    public int File(int i) => (uint)i < (uint)Files ? i : throw new ArgumentOutOfRangeException(nameof(i), $"the plan has {Files} files");

    /// <summary>The fd of the <paramref name="j"/>th by-fd mount.</summary>
    public int ByFdMount(int j) => Files + j;

    /// <summary>The fd of <see cref="JailPlan.Taps"/>[<paramref name="i"/>].</summary>
    public int Tap(int i) => Files + ByFdMounts + i;

    /// <summary>An fd list of <see cref="Count"/> entries, all -1 (not opened).</summary>
    public int[] NewList() => Enumerable.Repeat(-1, Count).ToArray();

    /// <summary>The fd at <paramref name="index"/> of what stage 2 received, or -1 if it is not there.</summary>
    public static int At(IReadOnlyList<int> fds, int index) => index < fds.Count ? fds[index] : -1;
}
