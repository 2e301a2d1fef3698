/*
 * ring3-compute.elf: pure ring-3 computation, no exits until it prints.
 *
 *   x = 0x9E3779B97F4A7C15, acc = 0
 *   repeat 10,000,000 times:
 *       x ^= x << 13; x ^= x >> 7; x ^= x << 17     (xorshift64)
 *       acc = acc * 31 + x                          (mod 2^64)
 *   print "RESULT=%016X\n" % acc, then i8042 reset.
 *
 * Expected output (see ring3-compute-ref.c, which recomputes it):
 *   RESULT=5E81E70F14244996
 */
        .include "common.inc"

        .set ITERATIONS, 10000000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        movabsq $0x9E3779B97F4A7C15, %rax   /* x */
        xorl    %ebx, %ebx                  /* acc */
        movl    $ITERATIONS, %ecx
1:      movq    %rax, %rdx
        shlq    $13, %rdx
        xorq    %rdx, %rax
        movq    %rax, %rdx
        shrq    $7, %rdx
        xorq    %rdx, %rax
        movq    %rax, %rdx
        shlq    $17, %rdx
        xorq    %rdx, %rax
        imulq   $31, %rbx, %rbx
        addq    %rax, %rbx
        decl    %ecx
        jnz     1b

        pushq   %rbx
        leaq    prefix(%rip), %rsi
        call    puts
        popq    %rax
        call    puthex64
        movb    $'\n', %al
        call    putc
        jmp     reset

prefix: .asciz  "RESULT="
