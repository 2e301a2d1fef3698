/*
 * idle.elf: prints "IDLE\n" on COM1 (from ring 0), then halts with
 * interrupts off, forever. With the in-kernel irqchip KVM keeps the vCPU
 * blocked in KVM_RUN, so the guest costs no host CPU; it never signals
 * boot-done and never ends (tests of an idle VM's cost).
 */
        .include "common.inc"

ring0_main:
        leaq    msg(%rip), %rsi
        call    puts
        cli
1:      hlt
        jmp     1b

msg:    .asciz  "IDLE\n"
