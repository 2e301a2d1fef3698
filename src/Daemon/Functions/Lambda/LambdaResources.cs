namespace FireSharp.Daemon.Functions.Lambda;

/// <summary>
/// Lambda's resource model: a function's memory size buys CPU in proportion, one full vCPU at 1,769 MB, so
/// doubling the memory doubles the CPU (the seed's cost table assumes it). A function's VM gets that share as
/// its CPU quota (<see cref="Vms.VmConfig.CpuQuotaMillicpus"/>), enforced by its cgroup.
/// </summary>
public static class LambdaResources
{
    /// <summary>The CPU quota, in thousandths of a CPU, of a function with <paramref name="memoryMib"/> MiB, rounded to the nearest.</summary>
    public static int CpuQuotaMillicpus(int memoryMib)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryMib, 1);
        long millicpus = ((long)memoryMib * 1000 + FunctionValidator.MibPerVcpu / 2) / FunctionValidator.MibPerVcpu;
        return (int)Math.Max(millicpus, Daemon.SpecValidator.MinCpuQuotaMillicpus);
    }
}
