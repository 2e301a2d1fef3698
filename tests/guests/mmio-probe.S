/*
 * mmio-probe.elf: MMIO access-width probe, from ring 3, in this order:
 *   1. 1-byte write 0x11               to 0xD0000000
 *   2. 2-byte write 0x2233             to 0xD0000002
 *   3. 4-byte write 0x44556677         to 0xD0000004
 *   4. 8-byte write 0x8899AABBCCDDEEFF to 0xD0000008
 *   5. 4-byte read                     from 0xD0000010
 *   6. 4-byte write of the value read  to 0xD0000014
 * then prints "MMIO-DONE\n" on COM1 and resets through the i8042.
 * 0xD0000000 is in the 3-4 GiB MMIO gap (no RAM there).
 */
        .include "common.inc"

        .set PROBE_BASE, 0xD0000000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        movl    $PROBE_BASE, %edi       /* zero-extended; an absolute disp32 would sign-extend */
        movb    $0x11, (%rdi)
        movw    $0x2233, 2(%rdi)
        movl    $0x44556677, 4(%rdi)
        movabsq $0x8899AABBCCDDEEFF, %rax
        movq    %rax, 8(%rdi)
        movl    0x10(%rdi), %eax
        movl    %eax, 0x14(%rdi)
        leaq    done(%rip), %rsi
        call    puts
        jmp     reset

done:   .asciz  "MMIO-DONE\n"
