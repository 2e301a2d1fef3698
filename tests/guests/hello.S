/*
 * hello.elf: prints "Hello from FireSharp tiny guest\n" on COM1 from ring 3,
 * then resets through the i8042 (port 0x64 <- 0xfe).
 */
        .include "common.inc"

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        leaq    msg(%rip), %rsi
        call    puts
        jmp     reset

msg:    .asciz  "Hello from FireSharp tiny guest\n"
