using FireSharp.Kvm.Interop;

namespace FireSharp.Boot;

/// <summary>A CPUID feature bit that FireSharp may hide from the guest, named for logs.</summary>
public readonly record struct CpuidFeature(string Name, uint Leaf, uint Subleaf, CpuidRegister Register, int Bit);

public enum CpuidRegister { Eax, Ebx, Ecx, Edx }

/// <summary>
/// Builds each vCPU's CPUID table from KVM_GET_SUPPORTED_CPUID: APIC ids, logical CPU counts and topology
/// leaves made consistent with the vCPU count, the hypervisor bit set, and optional features masked.
/// </summary>
public static class Cpuid
{
    private const uint HypervisorBit = 1u << 31; // leaf 1 ECX
    private const uint HttBit = 1u << 28;        // leaf 1 EDX

    public static kvm_cpuid_entry2[] ForVcpu(ReadOnlySpan<kvm_cpuid_entry2> supported, int vcpuId, int vcpuCount, IReadOnlyCollection<CpuidFeature> masked)
    {
        var entries = supported.ToArray();
        int coreBits = 0;
        while ((1 << coreBits) < vcpuCount) coreBits++;

        for (int i = 0; i < entries.Length; i++)
        {
            ref var e = ref entries[i];
            switch (e.function)
            {
                case 0x1:
                    // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package.
                    e.ebx = (e.ebx & 0x0000_ffff) | ((uint)vcpuId << 24) | ((uint)Math.Min(vcpuCount, 255) << 16);
                    e.ecx |= HypervisorBit;
                    e.edx = vcpuCount > 1 ? e.edx | HttBit : e.edx & ~HttBit;
                    break;
                case 0x4:
                    // EAX[31:26] cores per package - 1, EAX[25:14] logical CPUs sharing this cache - 1.
                    // One core per vCPU, no SMT; caches up to L2 are per core, L3 shared by all.
                    uint level = (e.eax >> 5) & 0x7;
                    uint sharing = level >= 3 ? (uint)vcpuCount - 1 : 0;
                    e.eax = (e.eax & 0x3fff) | (sharing << 14) | ((uint)(vcpuCount - 1) << 26);
                    break;
                case 0xb:
                case 0x1f:
                    // Extended topology: subleaf 0 = SMT level (1 thread per core), 1 = core level.
                    e.edx = (uint)vcpuId;
                    if (e.index == 0) { e.eax = 0; e.ebx = 1; e.ecx = (1u << 8) | 0; }
                    else if (e.index == 1) { e.eax = (uint)coreBits; e.ebx = (uint)vcpuCount; e.ecx = (2u << 8) | 1; }
                    else { e.eax = 0; e.ebx = 0; e.ecx = e.index; }
                    break;
                case 0x8000_0008:
                    // AMD: ECX[7:0] number of cores - 1.
                    e.ecx = (e.ecx & ~0xffu) | (uint)(vcpuCount - 1);
                    break;
            }
        }

        foreach (var f in masked)
        {
            for (int i = 0; i < entries.Length; i++)
            {
                ref var e = ref entries[i];
                if (e.function != f.Leaf || e.index != f.Subleaf) continue;
                uint clear = ~(1u << f.Bit);
                switch (f.Register)
                {
                    case CpuidRegister.Eax: e.eax &= clear; break;
                    case CpuidRegister.Ebx: e.ebx &= clear; break;
                    case CpuidRegister.Ecx: e.ecx &= clear; break;
                    case CpuidRegister.Edx: e.edx &= clear; break;
                }
            }
        }
        return entries;
    }
}
