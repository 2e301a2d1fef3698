/*
 * inout-loop.elf: for snapshot consistency tests.
 *
 * Ring 3 runs 20000 times `in $0x80, %al` followed by `out %al, $0x80`
 * (two KVM_EXIT_IO each round), then prints "DONE\n" on COM1 and resets
 * through the i8042. A host that counts the reads and writes of port 0x80
 * sees exactly 20000 of each, also when the VM is snapshotted in the middle
 * and the rest runs in a restored copy: an IN or OUT whose exit was handled
 * but not completed by KVM before the snapshot would run a second time.
 */
        .include "common.inc"

        .set ROUNDS, 20000

ring0_main:
        ENTER_RING3 ring3_main

ring3_main:
        movl    $ROUNDS, %ecx
1:      inb     $0x80, %al
        outb    %al, $0x80
        decl    %ecx
        jnz     1b
        leaq    done(%rip), %rsi
        call    puts
        jmp     reset

done:   .asciz  "DONE\n"
