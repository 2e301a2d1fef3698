/*
 * counter.elf: for pause/resume and snapshot tests.
 *
 * Ring 3 prints "COUNTING\n" on COM1, sets the 64-bit little-endian counter
 * at guest physical address 0x200000 (2 MiB, outside the image) to 0, then
 * increments it forever with no VM exits. The host reads the counter from
 * guest memory. It never resets by itself.
 */
        .include "common.inc"

        .set COUNTER_ADDR, 0x200000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        leaq    msg(%rip), %rsi
        call    puts
        movl    $COUNTER_ADDR, %edi
        movq    $0, (%rdi)
1:      incq    (%rdi)
        jmp     1b

msg:    .asciz  "COUNTING\n"
