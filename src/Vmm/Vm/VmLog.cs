using FireSharp.Boot;
using Microsoft.Extensions.Logging;

namespace FireSharp.Vm;

/// <summary>Log events of the VM and its boot, with stable ids (1000-1019).</summary>
internal static partial class VmLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "PVM workaround: kernel parameter {Parameter} ({Why})")]
    public static partial void PvmKernelParameter(ILogger logger, string parameter, string why);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Debug, Message = "kernel {Kernel}: {Format}, entry {Mode} at 0x{Rip:x}")]
    public static partial void KernelLoaded(ILogger logger, string kernel, KernelFormat format, BootEntryMode mode, ulong rip);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "guest boot done after {Ms:F1} ms")]
    public static partial void BootDone(ILogger logger, double ms);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Debug, Message = "cannot check a compressed kernel for virtio-mmio command-line device support")]
    public static partial void CompressedKernelNotChecked(ILogger logger);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Information,
        Message = "PVM workaround: emulator lacks int3; injecting #BP (vcpu {Vcpu}, rip 0x{Rip:x})")]
    public static partial void PvmInt3(ILogger logger, int vcpu, ulong rip);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information,
        Message = "PVM workaround: emulator lacks fwait; skipping it (vcpu {Vcpu}, rip 0x{Rip:x})")]
    public static partial void PvmFwait(ILogger logger, int vcpu, ulong rip);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Information,
        Message = "PVM host detected (/sys/module/kvm_pvm): guest kernel code runs in KVM's emulator; applying PVM workarounds")]
    public static partial void PvmHost(ILogger logger);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Information, Message = "PVM workaround: hiding CPUID feature {Feature}")]
    public static partial void PvmHiddenFeature(ILogger logger, string feature);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Warning, Message = "vcpu {Vcpu}: host refused initial value of MSR {Msr}")]
    public static partial void MsrRefused(ILogger logger, int vcpu, string msr);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Information, Message = "VM exit: {Exit}")]
    public static partial void Exit(ILogger logger, VmExit exit);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Error, Message = "VM dispose: {Error}; its memory stays mapped until they end")]
    public static partial void DisposeTimedOut(ILogger logger, string error);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Warning, Message = "rip sample: {Samples}")]
    public static partial void RipSample(ILogger logger, string samples);
}
