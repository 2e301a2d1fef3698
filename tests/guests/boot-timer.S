/*
 * boot-timer.elf: signals "boot done" the way Firecracker's boot-timer
 * device expects (1-byte write of 123 to MMIO 0xC0000000), from ring 3,
 * then prints "BOOTED\n" on COM1 and resets through the i8042.
 */
        .include "common.inc"

        .set BOOT_TIMER_ADDR, 0xC0000000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        movl    $BOOT_TIMER_ADDR, %edi
        movb    $123, (%rdi)
        leaq    msg(%rip), %rsi
        call    puts
        jmp     reset

msg:    .asciz  "BOOTED\n"
