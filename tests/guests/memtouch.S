/*
 * memtouch.elf: for memory-limit tests (a worker killed by its cgroup's OOM killer).
 *
 * Ring 3 prints "TOUCHING\n" on COM1, writes one byte to every 4 KiB page from
 * 4 MiB up to 256 MiB (so the guest needs at least 256 MiB of RAM), prints
 * "TOUCHED\n" and resets through the i8042 (a clean end). No VM exits while it
 * touches: the host sees only its memory use grow by 252 MiB.
 */
        .include "common.inc"

        .set TOUCH_FROM, 0x400000
        .set TOUCH_TO, 0x10000000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        leaq    msg(%rip), %rsi
        call    puts
        movl    $TOUCH_FROM, %edi
1:      movb    $1, (%rdi)
        addq    $4096, %rdi
        cmpq    $TOUCH_TO, %rdi
        jb      1b
        leaq    done(%rip), %rsi
        call    puts
        movb    $0xfe, %al
        outb    %al, $0x64
        ud2

msg:    .asciz  "TOUCHING\n"
done:   .asciz  "TOUCHED\n"
