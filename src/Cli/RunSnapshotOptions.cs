using System.CommandLine;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using FireSharp.Snapshot;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Cli;

/// <summary>
/// The snapshot options of <c>firesharp run</c>, for use without the daemon:
/// <list type="bullet">
/// <item><c>--restore DIR</c>: run the VM restored from snapshot DIR instead of booting a kernel;</item>
/// <item><c>--snapshot-dir DIR</c> with one trigger, <c>--snapshot-after-ms N</c> (N ms after the guest
/// starts running) or <c>--snapshot-at-boot-done</c> (when the guest writes 123 to the boot timer):
/// write a snapshot there once; <c>--snapshot-exit</c> stops the VM after it instead of resuming;</item>
/// <item><c>--exit-after-ms N</c>: stop the VM after N ms of running (exit status 0).</item>
/// </list>
/// </summary>
internal sealed class RunSnapshotOptions
{
    public Option<string?> Restore { get; } = new("--restore") { Description = "restore the VM from this snapshot directory instead of booting --kernel (memory is mapped copy-on-write from it)" };
    public Option<string?> SnapshotDir { get; } = new("--snapshot-dir") { Description = "write one snapshot into this new directory (needs --snapshot-after-ms or --snapshot-at-boot-done)" };
    public Option<int?> SnapshotAfterMs { get; } = new("--snapshot-after-ms") { Description = "take the snapshot this many ms after the guest starts running" };
    public Option<bool> SnapshotAtBootDone { get; } = new("--snapshot-at-boot-done") { Description = "take the snapshot when the guest signals boot done (byte 123 to MMIO 0xC0000000)" };
    public Option<bool> SnapshotExit { get; } = new("--snapshot-exit") { Description = "stop the VM after taking the snapshot (exit status 0) instead of resuming it" };
    public Option<int?> ExitAfterMs { get; } = new("--exit-after-ms") { Description = "stop the VM after this many ms of running (exit status 0)" };
    public Option<string?> SnapshotKey { get; } = new("--snapshot-key") { Description = "HMAC key file (or a directory of *.key files, such as the daemon's <StateDir>/snapshot-keys): --restore verifies the snapshot with it, --snapshot-dir signs with it (the newest key)" };
    public Option<bool> InsecureUnauthenticated { get; } = new("--insecure-unauthenticated") { Description = "restore without checking the snapshot's HMAC: only for a snapshot you trust completely (its state file names host paths that are opened)" };

    /// <summary>
    /// One-time process set-up that would otherwise land inside the first restore: the console's
    /// stderr writer (its first use initializes terminal and signal handling, about a millisecond),
    /// the vCPU kick signal handler, and OpenSSL's HMAC (loading libcrypto, about 2.5 ms here, for the snapshot's
    /// authentication). A long-lived worker process has done these before its first restore request; the CLI does
    /// them before it starts timing the restore.
    /// </summary>
    public static void WarmUpProcess()
    {
        Console.Error.Flush();
        FireSharp.Kvm.Interop.Signals.EnsureKickHandler();
        FireSharp.Snapshot.SnapshotMac.WarmUp();
    }

    public IEnumerable<Option> All => [Restore, SnapshotDir, SnapshotAfterMs, SnapshotAtBootDone, SnapshotExit, ExitAfterMs, SnapshotKey, InsecureUnauthenticated];

    public Settings Parse(ParseResult parse) => new()
    {
        RestoreDir = parse.GetValue(Restore),
        SnapshotDir = parse.GetValue(SnapshotDir),
        SnapshotAfterMs = parse.GetValue(SnapshotAfterMs),
        SnapshotAtBootDone = parse.GetValue(SnapshotAtBootDone),
        SnapshotExit = parse.GetValue(SnapshotExit),
        ExitAfterMs = parse.GetValue(ExitAfterMs),
        SnapshotKeyPath = parse.GetValue(SnapshotKey),
        InsecureUnauthenticated = parse.GetValue(InsecureUnauthenticated),
    };

    public sealed record Settings
    {
        public string? RestoreDir { get; init; }
        public string? SnapshotDir { get; init; }
        public int? SnapshotAfterMs { get; init; }
        public bool SnapshotAtBootDone { get; init; }
        public bool SnapshotExit { get; init; }
        public int? ExitAfterMs { get; init; }
        public string? SnapshotKeyPath { get; init; }
        public bool InsecureUnauthenticated { get; init; }

        /// <summary>The keys of <see cref="SnapshotKeyPath"/>, once loaded: they verify a restore; the newest signs a snapshot.</summary>
        public SnapshotKeys? Keys { get; init; }

        /// <summary>A usage error, or null when the combination is valid.</summary>
        public string? Validate(string? kernel)
        {
            if (RestoreDir is null && kernel is null) return "either --kernel or --restore is required";
            if (RestoreDir is not null && kernel is not null) return "--kernel and --restore exclude each other (a restored VM is already booted)";
            if (SnapshotKeyPath is not null && InsecureUnauthenticated) return "--snapshot-key and --insecure-unauthenticated exclude each other";
            if (RestoreDir is not null && SnapshotKeyPath is null && !InsecureUnauthenticated)
                return "--restore needs --snapshot-key FILE (the key the snapshot was signed with; a daemon's keys are in <StateDir>/snapshot-keys) "
                    + "or --insecure-unauthenticated (a forged snapshot can make this process open any host path it names)";
            if (InsecureUnauthenticated && RestoreDir is null) return "--insecure-unauthenticated only applies to --restore";
            int triggers = (SnapshotAfterMs is not null ? 1 : 0) + (SnapshotAtBootDone ? 1 : 0);
            if (SnapshotDir is null && (triggers > 0 || SnapshotExit)) return "--snapshot-after-ms, --snapshot-at-boot-done and --snapshot-exit need --snapshot-dir";
            if (SnapshotDir is not null && triggers != 1) return "--snapshot-dir needs exactly one of --snapshot-after-ms and --snapshot-at-boot-done";
            if (SnapshotAfterMs < 0) return "--snapshot-after-ms must not be negative";
            if (ExitAfterMs < 0) return "--exit-after-ms must not be negative";
            if (SnapshotDir is not null && (Directory.Exists(SnapshotDir) || File.Exists(SnapshotDir)))
                return $"snapshot directory {SnapshotDir} already exists";
            return null;
        }

        /// <summary>
        /// Starts the background work for a VM that has just been started: the restore-latency log line,
        /// the snapshot trigger and the exit timer. <paramref name="snapshotFailed"/> is set if the snapshot failed.
        /// </summary>
        public void StartWatchers(MicroVm vm, ILogger logger, long restoreStarted, StrongBox<bool> snapshotFailed)
        {
            if (RestoreDir is null && SnapshotDir is null && ExitAfterMs is null) return;
            var thread = new Thread(() => Watch(vm, logger, restoreStarted, snapshotFailed)) { IsBackground = true, Name = "run-watch" };
            thread.Start();
        }

        private void Watch(MicroVm vm, ILogger logger, long restoreStarted, StrongBox<bool> snapshotFailed)
        {
            var machine = vm.Machine;
            var exited = vm.Exited;
            // The guest is running from its vCPUs' first KVM_RUN.
            while (machine.FirstGuestEntryTimestamp == 0 && !exited.IsCompleted)
                Thread.Sleep(TimeSpan.FromMicroseconds(200));
            long running = machine.FirstGuestEntryTimestamp != 0 ? machine.FirstGuestEntryTimestamp : Stopwatch.GetTimestamp();
            if (RestoreDir is not null && machine.FirstGuestEntryTimestamp != 0)
            {
                double runningMs = Stopwatch.GetElapsedTime(restoreStarted, running).TotalMilliseconds;
                RunLog.RestoredRunning(logger, runningMs, (long)(running * (1e9 / Stopwatch.Frequency)));
            }

            long? exitAt = ExitAfterMs is { } e ? running + (long)(e * (Stopwatch.Frequency / 1000.0)) : null;
            if (SnapshotDir is { } dir)
            {
                if (SnapshotAfterMs is { } after)
                {
                    long at = running + (long)(after * (Stopwatch.Frequency / 1000.0));
                    if (!SleepUntil(at, exited, exitAt)) goto ExitTimer;
                }
                else
                {
                    // Boot-done is an event: wait for it, the guest's end or the exit deadline, whichever comes first.
                    var wait = exitAt is { } x ? Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), x) : Timeout.InfiniteTimeSpan;
                    Task.WaitAny([vm.BootTimer.Done, exited], wait < TimeSpan.Zero && exitAt is not null ? TimeSpan.Zero : wait);
                    if (vm.BootTimer.BootDone is null || exited.IsCompleted) goto ExitTimer;
                }
                try
                {
                    var r = SnapshotWriter.Create(vm, dir, resume: !SnapshotExit, signingKey: Keys?.Signing);
                    RunLog.SnapshotWritten(logger, r.Directory, r.MemoryBytesWritten / 1024, r.MemoryBytes >> 20, r.PausedFor.TotalMilliseconds);
                    if (SnapshotExit) machine.RequestExit(new VmExit(VmExitKind.Stopped, $"snapshot written to {r.Directory}"));
                }
                catch (SnapshotException ex)
                {
                    snapshotFailed.Value = true;
                    Console.Error.WriteLine($"firesharp: error: snapshot failed ({ex.Reason}): {ex.Message}");
                    if (SnapshotExit) machine.RequestExit(new VmExit(VmExitKind.Stopped, "snapshot failed"));
                }
            }
        ExitTimer:
            if (exitAt is { } end && SleepUntil(end, exited, null))
                machine.RequestExit(new VmExit(VmExitKind.Stopped, $"--exit-after-ms {ExitAfterMs} elapsed"));
        }

        /// <summary>Sleeps until <paramref name="timestamp"/>; false if the VM ended or the exit deadline came first.</summary>
        private static bool SleepUntil(long timestamp, Task exited, long? deadline)
        {
            while (true)
            {
                long now = Stopwatch.GetTimestamp();
                if (deadline is { } d && now >= d && d < timestamp) return false;
                if (now >= timestamp) return true;
                var wait = Stopwatch.GetElapsedTime(now, Math.Min(timestamp, deadline ?? long.MaxValue));
                if (exited.Wait(wait < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : wait)) return false;
            }
        }
    }
}
