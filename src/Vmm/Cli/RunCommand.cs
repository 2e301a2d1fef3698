using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using FireSharp.Boot;
using FireSharp.Devices.Legacy;
using FireSharp.Kvm;
using FireSharp.Vm;
using Microsoft.Extensions.Logging;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp run</c>: boots one guest in the foreground with its console on stdout (or a file).
/// Exit codes: 0 the guest reset or powered off; 1 it ended abnormally (triple fault, emulation
/// failure, ...); 2 invalid input (missing or malformed kernel, bad sizes); 3 KVM is unusable.
/// </summary>
internal static class RunCommand
{
    public const int ExitClean = 0, ExitGuestFailed = 1, ExitBadInput = 2, ExitNoKvm = 3;

    public static Command Create()
    {
        var kernel = new Option<string>("--kernel") { Description = "kernel: a PVH ELF, an ELF vmlinux or a bzImage", Required = true };
        var initrd = new Option<string?>("--initrd") { Description = "initramfs to load at the top of low memory" };
        var memMib = new Option<ulong>("--mem-mib") { Description = "guest memory in MiB", DefaultValueFactory = _ => 128 };
        var vcpus = new Option<int>("--vcpus") { Description = "number of vCPUs", DefaultValueFactory = _ => 1 };
        var cmdline = new Option<string?>("--cmdline") { Description = "kernel command line (Linux default: console=ttyS0 reboot=k panic=-1 ...)" };
        var serial = new Option<string>("--serial") { Description = "where the COM1 console goes: stdout or a file path", DefaultValueFactory = _ => "stdout" };
        var pvh = new Option<bool>("--pvh") { Description = "enter an ELF kernel through PVH even if it has a 64-bit entry" };
        var logLevel = new Option<LogLevel>("--log-level") { Description = "stderr log level", DefaultValueFactory = _ => LogLevel.Warning };

        var command = new Command("run", "run a guest in the foreground until it resets, powers off or fails")
        {
            kernel, initrd, memMib, vcpus, cmdline, serial, pvh, logLevel,
        };
        command.SetAction(parse => Execute(new VmSpec
        {
            KernelPath = parse.GetValue(kernel)!,
            InitrdPath = parse.GetValue(initrd),
            MemoryMib = parse.GetValue(memMib),
            Vcpus = parse.GetValue(vcpus),
            Cmdline = parse.GetValue(cmdline),
            PreferPvh = parse.GetValue(pvh),
        }, parse.GetValue(serial)!, parse.GetValue(logLevel)));
        return command;
    }

    private static int Execute(VmSpec spec, string serialTarget, LogLevel level)
    {
        long start = Stopwatch.GetTimestamp();
        var logger = new StderrLogger(level);
        using var sink = serialTarget == "stdout" ? StreamSerialSink.ForStandardOutput() : OpenFileSink(serialTarget);
        if (sink is null) return Fail(ExitBadInput, $"cannot open serial output file {serialTarget}");

        MicroVm vm;
        try
        {
            vm = MicroVm.Create(spec with { Serial = sink, Logger = logger }, start);
        }
        catch (BootException e) { return Fail(ExitBadInput, e.Message); }
        catch (MachineConfigException e) { return Fail(ExitBadInput, e.Message); }
        catch (KvmException e) when (e.Operation.StartsWith("open ", StringComparison.Ordinal)) { return Fail(ExitNoKvm, e.Message); }
        catch (KvmException e) { return Fail(ExitGuestFailed, e.Message); }

        using (vm)
        {
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "SIGTERM")); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; vm.Machine.RequestExit(new VmExit(VmExitKind.Stopped, "interrupted")); });
            StartInputPump(vm.Serial);
            vm.Start();
            RipSampler.StartIfRequested(vm.Machine);
            var exit = vm.Exited.GetAwaiter().GetResult();
            logger.LogInformation("guest ended after {Ms:F1} ms: {Exit}", Stopwatch.GetElapsedTime(start).TotalMilliseconds, exit);
            if (exit.IsClean) return ExitClean;
            return Fail(ExitGuestFailed, $"guest failed: {exit}");
        }
    }

    private static StreamSerialSink? OpenFileSink(string path)
    {
        try { return StreamSerialSink.ForFile(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Forwards host stdin to the guest's COM1 when stdin is interactive or a pipe.</summary>
    private static void StartInputPump(Serial16550 serial)
    {
        if (!Console.IsInputRedirected && !Environment.UserInteractive) return;
        var thread = new Thread(() =>
        {
            using var stdin = Console.OpenStandardInput();
            var buffer = new byte[256];
            int n;
            while ((n = stdin.Read(buffer)) > 0)
            {
                var data = buffer.AsSpan(0, n);
                while (!data.IsEmpty)
                {
                    int taken = serial.EnqueueInput(data);
                    data = data[taken..];
                    if (taken == 0) Thread.Sleep(10); // guest not draining: wait rather than drop keystrokes
                }
            }
        }) { IsBackground = true, Name = "stdin" };
        thread.Start();
    }

    private static int Fail(int code, string message)
    {
        Console.Error.WriteLine($"firesharp: error: {message}");
        return code;
    }
}
