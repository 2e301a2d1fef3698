/*
 * triple-fault.elf: prints "TF\n" on COM1 (from ring 0), loads a zero-limit
 * IDT and executes ud2: #UD cannot be delivered -> #GP -> #DF -> triple
 * fault, i.e. KVM_EXIT_SHUTDOWN. It never writes to the i8042.
 */
        .include "common.inc"

ring0_main:
        leaq    msg(%rip), %rsi
        call    puts
        lidt    idt_null_ptr            /* already loaded at entry; explicit here */
        ud2
1:      jmp     1b                      /* not reached */

msg:    .asciz  "TF\n"
