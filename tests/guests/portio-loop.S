/*
 * portio-loop.elf: exit-cost benchmark guest.
 *
 * Ring 3 executes N times `out %al, $0x80` (one KVM_EXIT_IO each), then
 * prints "DONE\n" on COM1 and resets through the i8042.
 * N comes from the PVH command line token `n=<decimal>` (a token starts the
 * line or follows a space); default 100000 when there is no such token.
 * n=0 is allowed (no port-0x80 writes at all).
 */
        .include "common.inc"

        .set DEFAULT_N, 100000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        call    parse_n                 /* -> %rcx */
        testq   %rcx, %rcx
        jz      2f
        xorl    %eax, %eax
1:      outb    %al, $0x80
        decq    %rcx
        jnz     1b
2:      leaq    done(%rip), %rsi
        call    puts
        jmp     reset

/* parse_n: %rcx = value of the first `n=` token, or DEFAULT_N. */
parse_n:
        movl    $DEFAULT_N, %ecx
        call    get_cmdline
        testq   %rsi, %rsi
        jz      9f
        movb    $' ', %dl               /* previous char: pretend a space */
1:      movb    (%rsi), %al
        testb   %al, %al
        jz      9f
        cmpb    $' ', %dl
        jne     3f
        cmpb    $'n', %al
        jne     3f
        cmpb    $'=', 1(%rsi)
        jne     3f
        addq    $2, %rsi                /* parse decimal digits */
        xorl    %ecx, %ecx
2:      movzbl  (%rsi), %eax
        subl    $'0', %eax
        cmpl    $9, %eax
        ja      9f
        imulq   $10, %rcx, %rcx
        addq    %rax, %rcx
        incq    %rsi
        jmp     2b
3:      movb    %al, %dl
        incq    %rsi
        jmp     1b
9:      ret

done:   .asciz  "DONE\n"
