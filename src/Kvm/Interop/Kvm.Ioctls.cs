// ioctl request numbers and constants from <linux/kvm.h> (x86_64), built with the _IOC encoding:
// dir (2 bits) << 30 | size (14 bits) << 16 | type << 8 | nr. Values above 0x7fffffff are passed to
// Tmds.LibC's ioctl(int, int, void*) with unchecked((int)...). tests/abi/kvm-abi-probe.c pins them all.
#pragma warning disable IDE1006, CA1707 // names match the kernel header on purpose

namespace FireSharp.Kvm.Interop;

public static class KvmIoctls
{
    private const uint KVMIO = 0xAE;
    private const uint None = 0, Write = 1, Read = 2;

    public const uint KVM_GET_API_VERSION = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x00;
    public const uint KVM_CREATE_VM = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x01;
    public const uint KVM_GET_MSR_INDEX_LIST = ((Read | Write) << 30) | (4u << 16) | (KVMIO << 8) | 0x02; // kvm_msr_list
    public const uint KVM_CHECK_EXTENSION = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x03;
    public const uint KVM_GET_VCPU_MMAP_SIZE = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x04;
    public const uint KVM_GET_SUPPORTED_CPUID = ((Read | Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x05; // kvm_cpuid2
    public const uint KVM_CREATE_VCPU = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x41;
    public const uint KVM_GET_DIRTY_LOG = ((Write) << 30) | (16u << 16) | (KVMIO << 8) | 0x42; // kvm_dirty_log
    public const uint KVM_SET_USER_MEMORY_REGION = ((Write) << 30) | (32u << 16) | (KVMIO << 8) | 0x46; // kvm_userspace_memory_region
    public const uint KVM_SET_TSS_ADDR = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x47;
    public const uint KVM_SET_IDENTITY_MAP_ADDR = ((Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x48; // ulong
    public const uint KVM_CREATE_IRQCHIP = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x60;
    public const uint KVM_IRQ_LINE = ((Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x61; // kvm_irq_level
    public const uint KVM_GET_IRQCHIP = ((Read | Write) << 30) | (520u << 16) | (KVMIO << 8) | 0x62; // kvm_irqchip
    public const uint KVM_SET_IRQCHIP = ((Read) << 30) | (520u << 16) | (KVMIO << 8) | 0x63; // kvm_irqchip
    // (KVM_SET_IRQCHIP really is _IOR in the header: a historic mistake kept for ABI stability.)
    public const uint KVM_IRQFD = ((Write) << 30) | (32u << 16) | (KVMIO << 8) | 0x76; // kvm_irqfd
    public const uint KVM_CREATE_PIT2 = ((Write) << 30) | (64u << 16) | (KVMIO << 8) | 0x77; // kvm_pit_config
    public const uint KVM_IOEVENTFD = ((Write) << 30) | (64u << 16) | (KVMIO << 8) | 0x79; // kvm_ioeventfd
    public const uint KVM_GET_PIT2 = ((Read) << 30) | (112u << 16) | (KVMIO << 8) | 0x9f; // kvm_pit_state2
    public const uint KVM_SET_PIT2 = ((Write) << 30) | (112u << 16) | (KVMIO << 8) | 0xa0; // kvm_pit_state2
    public const uint KVM_GET_CLOCK = ((Read) << 30) | (48u << 16) | (KVMIO << 8) | 0x7c; // kvm_clock_data
    public const uint KVM_SET_CLOCK = ((Write) << 30) | (48u << 16) | (KVMIO << 8) | 0x7b; // kvm_clock_data
    public const uint KVM_ENABLE_CAP = ((Write) << 30) | (104u << 16) | (KVMIO << 8) | 0xa3; // kvm_enable_cap
    public const uint KVM_RUN = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0x80;
    public const uint KVM_GET_REGS = ((Read) << 30) | (144u << 16) | (KVMIO << 8) | 0x81; // kvm_regs
    public const uint KVM_SET_REGS = ((Write) << 30) | (144u << 16) | (KVMIO << 8) | 0x82; // kvm_regs
    public const uint KVM_GET_SREGS = ((Read) << 30) | (312u << 16) | (KVMIO << 8) | 0x83; // kvm_sregs
    public const uint KVM_SET_SREGS = ((Write) << 30) | (312u << 16) | (KVMIO << 8) | 0x84; // kvm_sregs
    public const uint KVM_GET_MSRS = ((Read | Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x88; // kvm_msrs
    public const uint KVM_SET_MSRS = ((Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x89; // kvm_msrs
    public const uint KVM_GET_FPU = ((Read) << 30) | (416u << 16) | (KVMIO << 8) | 0x8c; // kvm_fpu
    public const uint KVM_SET_FPU = ((Write) << 30) | (416u << 16) | (KVMIO << 8) | 0x8d; // kvm_fpu
    public const uint KVM_GET_LAPIC = ((Read) << 30) | (1024u << 16) | (KVMIO << 8) | 0x8e; // kvm_lapic_state
    public const uint KVM_SET_LAPIC = ((Write) << 30) | (1024u << 16) | (KVMIO << 8) | 0x8f; // kvm_lapic_state
    public const uint KVM_SET_CPUID2 = ((Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x90; // kvm_cpuid2
    public const uint KVM_GET_CPUID2 = ((Read | Write) << 30) | (8u << 16) | (KVMIO << 8) | 0x91; // kvm_cpuid2
    public const uint KVM_GET_MP_STATE = ((Read) << 30) | (4u << 16) | (KVMIO << 8) | 0x98; // kvm_mp_state
    public const uint KVM_SET_MP_STATE = ((Write) << 30) | (4u << 16) | (KVMIO << 8) | 0x99; // kvm_mp_state
    public const uint KVM_GET_VCPU_EVENTS = ((Read) << 30) | (64u << 16) | (KVMIO << 8) | 0x9f; // kvm_vcpu_events
    public const uint KVM_SET_VCPU_EVENTS = ((Write) << 30) | (64u << 16) | (KVMIO << 8) | 0xa0; // kvm_vcpu_events
    public const uint KVM_GET_DEBUGREGS = ((Read) << 30) | (128u << 16) | (KVMIO << 8) | 0xa1; // kvm_debugregs
    public const uint KVM_SET_DEBUGREGS = ((Write) << 30) | (128u << 16) | (KVMIO << 8) | 0xa2; // kvm_debugregs
    public const uint KVM_GET_XSAVE = ((Read) << 30) | (4096u << 16) | (KVMIO << 8) | 0xa4; // kvm_xsave
    public const uint KVM_SET_XSAVE = ((Write) << 30) | (4096u << 16) | (KVMIO << 8) | 0xa5; // kvm_xsave
    public const uint KVM_GET_XCRS = ((Read) << 30) | (392u << 16) | (KVMIO << 8) | 0xa6; // kvm_xcrs
    public const uint KVM_SET_XCRS = ((Write) << 30) | (392u << 16) | (KVMIO << 8) | 0xa7; // kvm_xcrs
    public const uint KVM_KVMCLOCK_CTRL = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0xad;
    public const uint KVM_GET_TSC_KHZ = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0xa3;
    public const uint KVM_SET_TSC_KHZ = ((None) << 30) | (0u << 16) | (KVMIO << 8) | 0xa2;
    public const uint KVM_TRANSLATE = ((Read | Write) << 30) | (24u << 16) | (KVMIO << 8) | 0x85; // kvm_translation
}

public static class KvmConstants
{
    public const uint KVM_EXIT_IO = 2;
    public const uint KVM_EXIT_HLT = 5;
    public const uint KVM_EXIT_MMIO = 6;
    public const uint KVM_EXIT_SHUTDOWN = 8;
    public const uint KVM_EXIT_FAIL_ENTRY = 9;
    public const uint KVM_EXIT_INTR = 10;
    public const uint KVM_EXIT_INTERNAL_ERROR = 17;
    public const uint KVM_EXIT_SYSTEM_EVENT = 24;
    public const uint KVM_EXIT_IRQ_WINDOW_OPEN = 7;
    public const uint KVM_EXIT_DEBUG = 4;
    public const uint KVM_EXIT_EXCEPTION = 1;
    public const uint KVM_EXIT_UNKNOWN = 0;
    public const uint KVM_EXIT_IO_IN = 0;
    public const uint KVM_EXIT_IO_OUT = 1;
    public const uint KVM_SYSTEM_EVENT_SHUTDOWN = 1;
    public const uint KVM_SYSTEM_EVENT_RESET = 2;
    public const uint KVM_SYSTEM_EVENT_CRASH = 3;
    public const uint KVM_CAP_IRQCHIP = 0;
    public const uint KVM_CAP_HLT = 1;
    public const uint KVM_CAP_USER_MEMORY = 3;
    public const uint KVM_CAP_SET_TSS_ADDR = 4;
    public const uint KVM_CAP_NR_VCPUS = 9;
    public const uint KVM_CAP_NR_MEMSLOTS = 10;
    public const uint KVM_CAP_PIT2 = 33;
    public const uint KVM_CAP_IRQFD = 32;
    public const uint KVM_CAP_IOEVENTFD = 36;
    public const uint KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
    public const uint KVM_CAP_MAX_VCPUS = 66;
    public const uint KVM_CAP_IMMEDIATE_EXIT = 136;
    public const uint KVM_CAP_XSAVE = 55;
    public const uint KVM_CAP_XCRS = 56;
    public const uint KVM_CAP_DEBUGREGS = 50;
    public const uint KVM_CAP_VCPU_EVENTS = 41;
    public const uint KVM_CAP_ADJUST_CLOCK = 39;
    public const uint KVM_CAP_X2APIC_API = 129;
    public const uint KVM_CAP_SPLIT_IRQCHIP = 121;
    public const uint KVM_CAP_TSC_DEADLINE_TIMER = 72;
    public const uint KVM_CAP_IRQ_ROUTING = 25;
    public const uint KVM_CAP_PIT_STATE2 = 35;
    public const uint KVM_CAP_EXT_CPUID = 7;
    public const uint KVM_CAP_MP_STATE = 14;
    public const uint KVM_CAP_SYNC_MMU = 16;
    public const uint KVM_CAP_MAX_VCPU_ID = 128;
    public const uint KVM_MP_STATE_RUNNABLE = 0;
    public const uint KVM_MP_STATE_UNINITIALIZED = 1;
    public const uint KVM_MP_STATE_INIT_RECEIVED = 2;
    public const uint KVM_MP_STATE_HALTED = 3;
    public const uint KVM_MP_STATE_SIPI_RECEIVED = 4;
    public const uint KVM_IRQCHIP_PIC_MASTER = 0;
    public const uint KVM_IRQCHIP_PIC_SLAVE = 1;
    public const uint KVM_IRQCHIP_IOAPIC = 2;
    public const uint KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
    public const uint KVM_IOEVENTFD_FLAG_PIO = 2;
    public const uint KVM_IOEVENTFD_FLAG_DEASSIGN = 4;
    public const uint KVM_IRQFD_FLAG_DEASSIGN = 1;
    public const uint KVM_PIT_SPEAKER_DUMMY = 1;
    public const uint KVM_MEM_LOG_DIRTY_PAGES = 1;
    public const uint KVM_MEM_READONLY = 2;
    public const uint KVM_INTERNAL_ERROR_EMULATION = 1;
    public const uint KVM_VCPUEVENT_VALID_NMI_PENDING = 1;
    public const uint KVM_VCPUEVENT_VALID_SIPI_VECTOR = 2;
    public const uint KVM_VCPUEVENT_VALID_SHADOW = 4;
    public const uint KVM_VCPUEVENT_VALID_SMM = 8;
}
