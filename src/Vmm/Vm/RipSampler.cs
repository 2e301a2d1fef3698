using Microsoft.Extensions.Logging;

namespace FireSharp.Vm;

/// <summary>
/// Debugging aid for slow or stuck guests (FIRESHARP_SAMPLE_RIP_MS=N): every N ms it pauses the VM,
/// logs each vCPU's RIP and MP state, and resumes. Read the RIPs against the guest's System.map.
/// </summary>
public static class RipSampler
{
    public const string EnvironmentVariable = "FIRESHARP_SAMPLE_RIP_MS";

    public static void StartIfRequested(VirtualMachine vm)
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(EnvironmentVariable), out int ms) || ms <= 0) return;
        var thread = new Thread(() =>
        {
            while (!vm.Exited.IsCompleted)
            {
                Thread.Sleep(ms);
                try
                {
                    if (vm.State != VmState.Running || !vm.Pause(TimeSpan.FromSeconds(2))) continue;
                    var samples = vm.Vcpus.Select(v => $"vcpu{v.Id} rip=0x{v.GetRegs().rip:x} mp={v.GetMpState()}");
                    VmLog.RipSample(vm.Logger, string.Join("; ", samples));
                    vm.Resume();
                }
                catch (Exception e) when (e is InvalidOperationException or Kvm.KvmException)
                {
                    return;
                }
            }
        }) { IsBackground = true, Name = "rip-sampler" };
        thread.Start();
    }
}
