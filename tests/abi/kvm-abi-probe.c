/* Prints the kernel ABI facts that FireSharp's Kvm/Interop layer hard-codes, read from the
 * machine's own <linux/kvm.h>. The test suite compiles and runs this and compares every line
 * with the C# definitions. Output: one "name value" pair per line, values in decimal. */
#include <stddef.h>
#include <stdio.h>
#include <linux/kvm.h>

#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
#define SZ(t) P("sizeof." #t, sizeof(struct t))
#define OFF(t, f) P("offsetof." #t "." #f, offsetof(struct t, f))
#define IOC(n) P("ioctl." #n, (unsigned int)(n))
#define K(n) P("const." #n, n)

int main(void)
{
    SZ(kvm_userspace_memory_region); SZ(kvm_regs); SZ(kvm_segment); SZ(kvm_dtable); SZ(kvm_sregs);
    SZ(kvm_fpu); SZ(kvm_msr_entry); SZ(kvm_msrs); SZ(kvm_msr_list); SZ(kvm_cpuid_entry2); SZ(kvm_cpuid2);
    SZ(kvm_lapic_state); SZ(kvm_mp_state); SZ(kvm_vcpu_events); SZ(kvm_irq_level); SZ(kvm_irqfd);
    SZ(kvm_ioeventfd); SZ(kvm_pit_config); SZ(kvm_irqchip); SZ(kvm_pit_state2); SZ(kvm_pit_channel_state);
    SZ(kvm_clock_data); SZ(kvm_debugregs); SZ(kvm_xcrs); SZ(kvm_xcr); SZ(kvm_xsave); SZ(kvm_dirty_log); SZ(kvm_enable_cap);
    SZ(kvm_run); SZ(kvm_translation); SZ(kvm_pic_state); SZ(kvm_ioapic_state);

    OFF(kvm_userspace_memory_region, guest_phys_addr); OFF(kvm_userspace_memory_region, memory_size);
    OFF(kvm_userspace_memory_region, userspace_addr);
    OFF(kvm_regs, rip); OFF(kvm_regs, rflags); OFF(kvm_regs, r8);
    OFF(kvm_segment, limit); OFF(kvm_segment, selector); OFF(kvm_segment, type); OFF(kvm_segment, unusable);
    OFF(kvm_sregs, tr); OFF(kvm_sregs, gdt); OFF(kvm_sregs, idt); OFF(kvm_sregs, cr0); OFF(kvm_sregs, efer);
    OFF(kvm_sregs, apic_base); OFF(kvm_sregs, interrupt_bitmap);
    OFF(kvm_fpu, fcw); OFF(kvm_fpu, ftwx); OFF(kvm_fpu, last_ip); OFF(kvm_fpu, xmm); OFF(kvm_fpu, mxcsr);
    OFF(kvm_msr_entry, data); OFF(kvm_msrs, entries); OFF(kvm_cpuid2, entries); OFF(kvm_cpuid_entry2, eax);
    OFF(kvm_cpuid_entry2, edx);
    OFF(kvm_vcpu_events, interrupt); OFF(kvm_vcpu_events, nmi); OFF(kvm_vcpu_events, sipi_vector);
    OFF(kvm_vcpu_events, flags); OFF(kvm_vcpu_events, smi); OFF(kvm_vcpu_events, exception_has_payload);
    OFF(kvm_vcpu_events, exception_payload);
    OFF(kvm_irqfd, gsi); OFF(kvm_irqfd, flags); OFF(kvm_irqfd, resamplefd);
    OFF(kvm_ioeventfd, addr); OFF(kvm_ioeventfd, len); OFF(kvm_ioeventfd, fd); OFF(kvm_ioeventfd, flags);
    OFF(kvm_irqchip, chip); OFF(kvm_pit_state2, flags); OFF(kvm_clock_data, flags); OFF(kvm_clock_data, realtime);
    OFF(kvm_debugregs, dr6); OFF(kvm_debugregs, flags); OFF(kvm_xcrs, xcrs); OFF(kvm_dirty_log, dirty_bitmap);
    OFF(kvm_enable_cap, args);
    OFF(kvm_run, immediate_exit); OFF(kvm_run, exit_reason); OFF(kvm_run, if_flag); OFF(kvm_run, cr8);
    OFF(kvm_run, io); OFF(kvm_run, io.port); OFF(kvm_run, io.count); OFF(kvm_run, io.data_offset);
    OFF(kvm_run, mmio.data); OFF(kvm_run, mmio.len); OFF(kvm_run, mmio.is_write);
    OFF(kvm_run, fail_entry.cpu); OFF(kvm_run, internal.ndata); OFF(kvm_run, internal.data);
    OFF(kvm_run, system_event.ndata); OFF(kvm_run, system_event.data); OFF(kvm_run, kvm_valid_regs);

    IOC(KVM_GET_API_VERSION); IOC(KVM_CREATE_VM); IOC(KVM_GET_MSR_INDEX_LIST); IOC(KVM_CHECK_EXTENSION);
    IOC(KVM_GET_VCPU_MMAP_SIZE); IOC(KVM_GET_SUPPORTED_CPUID); IOC(KVM_CREATE_VCPU); IOC(KVM_GET_DIRTY_LOG);
    IOC(KVM_SET_USER_MEMORY_REGION); IOC(KVM_SET_TSS_ADDR); IOC(KVM_SET_IDENTITY_MAP_ADDR);
    IOC(KVM_CREATE_IRQCHIP); IOC(KVM_IRQ_LINE); IOC(KVM_GET_IRQCHIP); IOC(KVM_SET_IRQCHIP); IOC(KVM_IRQFD);
    IOC(KVM_CREATE_PIT2); IOC(KVM_IOEVENTFD); IOC(KVM_GET_PIT2); IOC(KVM_SET_PIT2); IOC(KVM_GET_CLOCK);
    IOC(KVM_SET_CLOCK); IOC(KVM_ENABLE_CAP);
    IOC(KVM_RUN); IOC(KVM_GET_REGS); IOC(KVM_SET_REGS); IOC(KVM_GET_SREGS); IOC(KVM_SET_SREGS);
    IOC(KVM_GET_MSRS); IOC(KVM_SET_MSRS); IOC(KVM_GET_FPU); IOC(KVM_SET_FPU); IOC(KVM_GET_LAPIC);
    IOC(KVM_SET_LAPIC); IOC(KVM_SET_CPUID2); IOC(KVM_GET_CPUID2); IOC(KVM_GET_MP_STATE); IOC(KVM_SET_MP_STATE);
    IOC(KVM_GET_VCPU_EVENTS); IOC(KVM_SET_VCPU_EVENTS); IOC(KVM_GET_DEBUGREGS); IOC(KVM_SET_DEBUGREGS);
    IOC(KVM_GET_XSAVE); IOC(KVM_SET_XSAVE); IOC(KVM_GET_XCRS); IOC(KVM_SET_XCRS); IOC(KVM_KVMCLOCK_CTRL);
    IOC(KVM_GET_TSC_KHZ); IOC(KVM_SET_TSC_KHZ); IOC(KVM_TRANSLATE);

    K(KVM_EXIT_IO); K(KVM_EXIT_HLT); K(KVM_EXIT_MMIO); K(KVM_EXIT_SHUTDOWN); K(KVM_EXIT_FAIL_ENTRY);
    K(KVM_EXIT_INTR); K(KVM_EXIT_INTERNAL_ERROR); K(KVM_EXIT_SYSTEM_EVENT); K(KVM_EXIT_IRQ_WINDOW_OPEN);
    K(KVM_EXIT_DEBUG); K(KVM_EXIT_EXCEPTION); K(KVM_EXIT_UNKNOWN); K(KVM_EXIT_IO_IN); K(KVM_EXIT_IO_OUT);
    K(KVM_SYSTEM_EVENT_SHUTDOWN); K(KVM_SYSTEM_EVENT_RESET); K(KVM_SYSTEM_EVENT_CRASH);
    K(KVM_CAP_IRQCHIP); K(KVM_CAP_HLT); K(KVM_CAP_USER_MEMORY); K(KVM_CAP_SET_TSS_ADDR); K(KVM_CAP_NR_VCPUS);
    K(KVM_CAP_NR_MEMSLOTS); K(KVM_CAP_PIT2); K(KVM_CAP_IRQFD); K(KVM_CAP_IOEVENTFD); K(KVM_CAP_SET_IDENTITY_MAP_ADDR);
    K(KVM_CAP_MAX_VCPUS); K(KVM_CAP_IMMEDIATE_EXIT); K(KVM_CAP_XSAVE); K(KVM_CAP_XCRS); K(KVM_CAP_DEBUGREGS);
    K(KVM_CAP_VCPU_EVENTS); K(KVM_CAP_ADJUST_CLOCK); K(KVM_CAP_X2APIC_API); K(KVM_CAP_SPLIT_IRQCHIP);
    K(KVM_CAP_TSC_DEADLINE_TIMER); K(KVM_CAP_IRQ_ROUTING); K(KVM_CAP_PIT_STATE2); K(KVM_CAP_EXT_CPUID);
    K(KVM_CAP_MP_STATE); K(KVM_CAP_SYNC_MMU); K(KVM_CAP_MAX_VCPU_ID);
    K(KVM_MP_STATE_RUNNABLE); K(KVM_MP_STATE_UNINITIALIZED); K(KVM_MP_STATE_INIT_RECEIVED); K(KVM_MP_STATE_HALTED);
    K(KVM_MP_STATE_SIPI_RECEIVED);
    K(KVM_IRQCHIP_PIC_MASTER); K(KVM_IRQCHIP_PIC_SLAVE); K(KVM_IRQCHIP_IOAPIC);
    K(KVM_IOEVENTFD_FLAG_DATAMATCH); K(KVM_IOEVENTFD_FLAG_PIO); K(KVM_IOEVENTFD_FLAG_DEASSIGN);
    K(KVM_IRQFD_FLAG_DEASSIGN); K(KVM_PIT_SPEAKER_DUMMY); K(KVM_MEM_LOG_DIRTY_PAGES); K(KVM_MEM_READONLY);
    K(KVM_INTERNAL_ERROR_EMULATION); K(KVM_VCPUEVENT_VALID_NMI_PENDING); K(KVM_VCPUEVENT_VALID_SIPI_VECTOR);
    K(KVM_VCPUEVENT_VALID_SHADOW); K(KVM_VCPUEVENT_VALID_SMM);
    return 0;
}
