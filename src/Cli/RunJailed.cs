using FireSharp.Daemon;
using FireSharp.Daemon.Vms;
using FireSharp.Daemon.Workers;
using FireSharp.Vm;
using Microsoft.Extensions.Logging.Abstractions;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp run --jail</c>: the daemon's jail (docs/isolation.md), tried by hand. A private daemon core
/// (<see cref="VmManager"/>, no API socket) on a temporary state directory runs the VM in a jailed
/// <c>firesharp-vmm</c>, exactly as <c>firesharp serve</c> would; the console streams to stdout until the guest
/// ends; then the VM, its worker and the state directory go. Needs root.
/// </summary>
internal static class RunJailed
{
    public static int Execute(VmSpec spec, bool rng, bool restoring)
    {
        if (!Environment.IsPrivilegedProcess) return Fail("--jail needs root (the jailer mounts, pivot_roots and changes uid)");
        if (restoring) return Fail("--jail cannot be combined with --restore yet (restore through `firesharp serve`, which jails)");
        if (spec.NetworkInterfaces.Count > 0 || spec.Vsock is not null)
            return Fail("--jail runs a VM without --net or --vsock/--agent for now (see docs/isolation.md)");
        var config = new VmConfig
        {
            Kernel = new KernelConfig(Path.GetFullPath(spec.KernelPath)) { InitrdPath = spec.InitrdPath is { } i ? Path.GetFullPath(i) : null, Cmdline = spec.Cmdline, PreferPvh = spec.PreferPvh },
            Vcpus = spec.Vcpus,
            MemMib = (long)spec.MemoryMib,
            Drives = [.. spec.Drives.Select((d, n) => new DriveConfig($"drive{n}", Path.GetFullPath(d.Path)) { ReadOnly = d.ReadOnly, Root = d.IsRoot })],
            Rng = rng,
        };
        return RunAsync(config).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(VmConfig config)
    {
        string state = Path.Combine("/tmp", "firesharp-run-" + Guid.NewGuid().ToString("N")[..8]);
        var options = new DaemonOptions { StateDir = state, Socket = Path.Combine(state, "api.sock"), Jail = true };
        using var stop = new CancellationTokenSource();
        using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        var manager = new VmManager(options, new ProcessWorkerLauncher(ProcessWorkerLauncher.DefaultBinary()), HostLimits.Detect(), NullLogger<VmManager>.Instance);
        try
        {
            await manager.InitializeAsync(CancellationToken.None).ConfigureAwait(false);
            await manager.CreateAsync(new CreateVmCommand("run", config) { Start = true }, CancellationToken.None).ConfigureAwait(false);
            Console.Error.WriteLine($"firesharp: VM running jailed, worker pid {manager.Get("run").WorkerPid}, jail {options.JailDir("run")}");
            await using (var console = await manager.AttachConsoleAsync("run", replay: true, CancellationToken.None).ConfigureAwait(false))
            {
                using var stdout = Console.OpenStandardOutput();
                try
                {
                    await foreach (var chunk in console.ReadAllAsync(stop.Token).ConfigureAwait(false))
                        await stdout.WriteAsync(chunk.Data.Memory, stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) { }
            }
            if (stop.IsCancellationRequested) await manager.StopAsync("run", 1, force: true, CancellationToken.None).ConfigureAwait(false);
            var vm = manager.Get("run");
            for (int i = 0; i < 100 && vm.Phase is not (VmPhase.Stopped or VmPhase.Failed); i++)
            {
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                vm = manager.Get("run");
            }
            if (vm.End is { Clean: true }) return 0;
            return Fail($"guest failed: {vm.End?.Kind} {vm.End?.Reason}", RunCommand.ExitGuestFailed);
        }
        catch (VmApiException e)
        {
            return Fail(e.Message);
        }
        finally
        {
            try { await manager.DeleteAsync("run", force: true, CancellationToken.None).ConfigureAwait(false); }
            catch (VmApiException) { }
            await manager.DisposeAsync().ConfigureAwait(false);
            try { Directory.Delete(state, recursive: true); }
            catch (IOException) { }
        }
    }

    private static int Fail(string message, int code = RunCommand.ExitBadInput)
    {
        Console.Error.WriteLine($"firesharp: {message}");
        return code;
    }
}
