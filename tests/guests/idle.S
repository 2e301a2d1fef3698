/*
 * idle.elf: the idle guest of the density benchmark (P9) and of the worker's P3.
 *
 * Ring 0 prints "IDLE\n" on COM1, then halts forever with interrupts off
 * (`cli; hlt` in a loop). With the in-kernel irqchip KVM keeps the halted
 * vCPU blocked in KVM_RUN, so an idle clone costs no host CPU, unlike
 * counter.elf, which spins in ring 3. The few ring-0 instructions are
 * emulated on PVM hosts, which takes well under a millisecond.
 * Without an in-kernel irqchip HLT exits to the VMM, which ends the VM.
 */
        .include "common.inc"

ring0_main:
        leaq    msg(%rip), %rsi
        call    puts
        cli
1:      hlt
        jmp     1b

msg:    .asciz  "IDLE\n"
