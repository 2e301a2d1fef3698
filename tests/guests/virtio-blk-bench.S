/*
 * virtio-blk-bench.elf: a ring-3 virtio-blk driver and throughput benchmark.
 *
 * All of the driver runs at CPL 3 (natively on PVM hosts). It speaks the
 * virtio 1.x virtio-mmio transport, version 2 ("modern") only, with one
 * split virtqueue, polled: no interrupts (VIRTQ_AVAIL_F_NO_INTERRUPT, IF=0).
 *
 *   1. Find the device: the first transport with MagicValue 0x74726976,
 *      Version 2 and DeviceID 2 (block), probing in this order:
 *        - only the address given by `vblk=<addr>` when that token is present;
 *        - FireSharp/Firecracker: 0xC0001000 + n*0x1000, n = 0..16;
 *        - QEMU microvm: 0xFEB00000 + n*0x200, n = 23 down to 0 (QEMU fills
 *          its transports from the top: the first -device sits at 0xFEB02E00
 *          with ioapic2=on, the default, and at 0xFEB00E00 with ioapic2=off).
 *   2. Initialise it as virtio 1.x section 3.1.1 says: reset (and wait for
 *      Status to read 0), ACKNOWLEDGE, DRIVER, read the 64 feature bits,
 *      accept VIRTIO_F_VERSION_1 (required) plus VIRTIO_BLK_F_RO and
 *      VIRTIO_BLK_F_FLUSH when offered (nothing else: no EVENT_IDX, no
 *      INDIRECT_DESC), FEATURES_OK and check that it sticks, read the
 *      capacity under ConfigGeneration, set up queue 0 (size 128, or the
 *      largest power of two <= QueueNumMax), QueueReady, DRIVER_OK.
 *   3. Move `mib` MiB from (mode=read) or to (mode=write) sector 0 onwards in
 *      requests of `req` KiB, keeping up to `depth` requests in flight. A
 *      request that would pass the end of the disk starts again at sector 0
 *      instead, so `mib` may exceed the disk size (repeated passes). The
 *      used ring is polled; freed slots are refilled in batches of at least
 *      `batch` requests (or when nothing is in flight), one avail.idx update
 *      and at most one QueueNotify per batch, skipped while the device sets
 *      VIRTQ_USED_F_NO_NOTIFY.
 *   4. mode=write with flush=1 (the default) ends with one VIRTIO_BLK_T_FLUSH
 *      when VIRTIO_BLK_F_FLUSH was negotiated (timed too).
 *   5. Reset the device, print the result line, reset the VM (common.inc).
 *
 * Data pattern ("sector pattern"), the same for both modes: sector s holds
 * the u64 s at offset 0, the u64 0x31304B4C42565346 ("FSVBLK01") at offset 8
 * and zeros in the other 496 bytes.
 *   - read: the image must hold the pattern. For every completed request the
 *     guest checks the first, middle and last sector (LBA and magic), then
 *     poisons those 16 bytes so that a stale buffer fails the next check.
 *   - write: the guest writes the pattern; the host checks the image.
 *
 * Command line tokens (PVH cmdline; a token starts the line or follows a
 * space; numbers are decimal or 0x-hex):
 *   mib=N      MiB to move, 0..1048576, default 256 (0: init only, no I/O)
 *   req=K      KiB per request, 1..4096, default 256 (the last one may be short)
 *   depth=D    requests in flight, 1..42, default 32 (capped at QueueSize/3)
 *   batch=B    refill threshold, 1..42, default 8 (capped at depth)
 *   mode=M     read or write, default read
 *   flush=F    0 or 1, default 1 (write mode only)
 *   vblk=ADDR  transport base address; skips the probe
 *
 * Memory used (guest physical == virtual):
 *   0x400000  descriptor table (3 descriptors per slot: header, data, status)
 *   0x401000  available ring      0x402000  used ring
 *   0x403000  request headers     0x404000  status bytes (one per slot)
 *   0x1000000 data buffers, slot i at 0x1000000 + i*req bytes
 * so the guest needs 16 MiB + depth*req of RAM (24 MiB for the defaults).
 *
 * Output on COM1 (one line each):
 *   VBLK-DEV at=<hex> sectors=<n> qsize=<n> depth=<n> features=<hex>
 *   VBLK-DONE mode=<m> bytes=<n> reqs=<n> notifies=<n> tsc=<n>
 *     tsc: rdtsc ticks from the first submission to the last completion
 *     (and the flush); notifies: QueueNotify writes (MMIO exits) in that time
 *   or VBLK-ERROR <reason>[=<n>] (the driver sets FAILED when it found a
 *   device), or VBLK-BADDATA lba=<n> got=<hex> (read data mismatch).
 */
        .include "common.inc"

/* virtio-mmio registers (virtio 1.x section 4.2.2) */
        .set R_MAGIC,          0x000
        .set R_VERSION,        0x004
        .set R_DEVICE_ID,      0x008
        .set R_DEV_FEAT,       0x010
        .set R_DEV_FEAT_SEL,   0x014
        .set R_DRV_FEAT,       0x020
        .set R_DRV_FEAT_SEL,   0x024
        .set R_QUEUE_SEL,      0x030
        .set R_QUEUE_NUM_MAX,  0x034
        .set R_QUEUE_NUM,      0x038
        .set R_QUEUE_READY,    0x044
        .set R_QUEUE_NOTIFY,   0x050
        .set R_STATUS,         0x070
        .set R_QUEUE_DESC_LO,  0x080
        .set R_QUEUE_DESC_HI,  0x084
        .set R_QUEUE_AVAIL_LO, 0x090
        .set R_QUEUE_AVAIL_HI, 0x094
        .set R_QUEUE_USED_LO,  0x0a0
        .set R_QUEUE_USED_HI,  0x0a4
        .set R_CONFIG_GEN,     0x0fc
        .set R_CONFIG,         0x100    /* virtio_blk_config: capacity (u64, sectors) first */

        .set VIRTIO_MAGIC,     0x74726976   /* "virt" */
        .set VIRTIO_ID_BLOCK,  2

        .set S_ACKNOWLEDGE,    1
        .set S_DRIVER,         2
        .set S_DRIVER_OK,      4
        .set S_FEATURES_OK,    8
        .set S_NEEDS_RESET,    0x40
        .set S_FAILED,         0x80

        .set F_BLK_RO,         1 << 5       /* feature word 0 */
        .set F_BLK_FLUSH,      1 << 9       /* feature word 0 (also called WCE) */
        .set F_VERSION_1,      1 << 0       /* feature word 1 (bit 32) */

        .set T_IN,             0
        .set T_OUT,            1
        .set T_FLUSH,          4

        .set D_NEXT,           1            /* virtq_desc.flags */
        .set D_WRITE,          2
        .set AVAIL_NO_INTERRUPT, 1
        .set USED_NO_NOTIFY,   1

/* guest-physical layout (all below 2 GiB: absolute disp32 operands are fine) */
        .set QDESC,            0x400000
        .set QAVAIL,           0x401000
        .set QUSED,            0x402000
        .set HDR_BASE,         0x403000
        .set STATUS_BASE,      0x404000
        .set QAREA_END,        0x405000
        .set DATA_BASE,        0x1000000

        .set QSIZE_WANT,       128
        .set MAX_DEPTH,        42           /* 3 descriptors per request, 128 / 3 */
        .set PATTERN_MAGIC,    0x31304B4C42565346   /* "FSVBLK01" little-endian */
        .set POISON,           0xDEADDEADDEADDEAD
        .set STALL_TSC,        1 << 32      /* ~1-2 s without progress: look at Status */
        .set STALL_LIMIT,      20           /* then give up ("timeout") */

        .set FS_MMIO_BASE,     0xC0001000   /* FireSharp / Firecracker */
        .set FS_MMIO_STRIDE,   0x1000
        .set FS_MMIO_COUNT,    17
        .set QEMU_MMIO_BASE,   0xFEB00000   /* QEMU microvm */
        .set QEMU_MMIO_STRIDE, 0x200
        .set QEMU_MMIO_COUNT,  24

ring0_main:
        ENTER_RING3 ring3_main

/* ================================================================ */
/* Register use in ring 3: %rbx = transport base (0 until found),
 * %r12 = next avail index (shadow), %r13 = next used index to consume,
 * %r14 = completed requests, %r15 = queue size - 1. */

ring3_main:
        xorl    %ebx, %ebx
        call    parse_args
        call    probe
        call    dev_init
        call    print_dev
        call    run_io
        movl    $0, R_STATUS(%rbx)      /* device reset: it stops using our memory */
        call    print_done
        jmp     reset

/* ---------------------------------------------------------------- */
/* Errors. fail: %rsi = reason. fail_num: %rsi = reason, %rax = number. */
fail_num:
        movq    %rax, err_num(%rip)
        movb    $1, err_has_num(%rip)
fail:
        pushq   %rsi
        leaq    s_error(%rip), %rsi
        call    puts
        popq    %rsi
        call    puts
        movq    err_suffix(%rip), %rsi
        testq   %rsi, %rsi
        jz      2f
        call    puts
2:      cmpb    $0, err_has_num(%rip)
        je      1f
        movb    $'=', %al
        call    putc
        movq    err_num(%rip), %rax
        call    putdec
1:      movb    $'\n', %al
        call    putc
        testq   %rbx, %rbx
        jz      reset
        movl    R_STATUS(%rbx), %eax    /* tell the device the driver gave up */
        orl     $S_FAILED, %eax
        movl    %eax, R_STATUS(%rbx)
        jmp     reset

/* ---------------------------------------------------------------- */
/* Command line. */

/* find_arg: %rdi = key including '=' (NUL-terminated).
 * -> %rsi = start of its value in the cmdline, or 0. Clobbers %rax, %rcx, %rdx. */
find_arg:
        call    get_cmdline
        testq   %rsi, %rsi
        jz      9f
        movb    $' ', %dl               /* previous char: pretend a space */
1:      cmpb    $0, (%rsi)
        je      8f
        cmpb    $' ', %dl
        jne     3f
        xorl    %ecx, %ecx
2:      movb    (%rdi,%rcx), %al
        testb   %al, %al
        jz      4f                      /* whole key matched */
        cmpb    (%rsi,%rcx), %al
        jne     3f
        incq    %rcx
        jmp     2b
3:      movb    (%rsi), %dl
        incq    %rsi
        jmp     1b
4:      addq    %rcx, %rsi
        ret
8:      xorl    %esi, %esi
9:      ret

/* parse_num: decimal, or hex after "0x". %rsi = text -> %rax = value,
 * %rsi = first byte after the digits, %ecx = number of digits. Clobbers %rdx. */
parse_num:
        xorl    %eax, %eax
        xorl    %ecx, %ecx
        cmpb    $'0', (%rsi)
        jne     5f
        movb    1(%rsi), %dl
        orb     $0x20, %dl
        cmpb    $'x', %dl
        jne     5f
        addq    $2, %rsi
1:      movzbl  (%rsi), %edx
        subl    $'0', %edx
        cmpl    $9, %edx
        jbe     2f
        movzbl  (%rsi), %edx
        orl     $0x20, %edx
        subl    $'a', %edx
        cmpl    $5, %edx
        ja      9f
        addl    $10, %edx
2:      shlq    $4, %rax
        addq    %rdx, %rax
        incq    %rsi
        incl    %ecx
        jmp     1b
5:      movzbl  (%rsi), %edx
        subl    $'0', %edx
        cmpl    $9, %edx
        ja      9f
        imulq   $10, %rax, %rax
        addq    %rdx, %rax
        incq    %rsi
        incl    %ecx
        jmp     5b
9:      ret

/* at_token_end: ZF=1 when (%rsi) is a space or NUL. Clobbers %al. */
at_token_end:
        movb    (%rsi), %al
        testb   %al, %al
        jz      1f
        cmpb    $' ', %al
1:      ret

/* arg_num: %rdi = key, %rax = default, %r8 = min, %r9 = max -> %rax.
 * A value that is not a number in [min, max] is fatal (bad-args). */
arg_num:
        pushq   %rax
        call    find_arg
        popq    %rax
        testq   %rsi, %rsi
        jz      9f
        call    parse_num
        testl   %ecx, %ecx
        jz      8f
        pushq   %rax
        call    at_token_end
        popq    %rax
        jne     8f
        cmpq    %r8, %rax
        jb      8f
        cmpq    %r9, %rax
        ja      8f
9:      ret
8:      jmp     bad_arg

/* bad_arg: %rdi = key. Fatal: "VBLK-ERROR bad-args <key>". */
bad_arg:
        movq    %rdi, err_suffix(%rip)
        leaq    s_bad_args(%rip), %rsi
        jmp     fail

/* match_word: %rsi = value, %rdi = word. ZF=1 when the value is exactly the
 * word (followed by space or NUL). Clobbers %rax, %rcx. */
match_word:
        xorl    %ecx, %ecx
1:      movb    (%rdi,%rcx), %al
        testb   %al, %al
        jz      2f
        cmpb    (%rsi,%rcx), %al
        jne     9f
        incq    %rcx
        jmp     1b
2:      movb    (%rsi,%rcx), %al
        testb   %al, %al
        jz      9f
        cmpb    $' ', %al
9:      ret

parse_args:
        leaq    k_mib(%rip), %rdi
        movl    $256, %eax
        xorl    %r8d, %r8d
        movl    $1048576, %r9d
        call    arg_num
        shlq    $20, %rax
        movq    %rax, total_bytes(%rip)
        movq    %rax, remaining(%rip)

        leaq    k_req(%rip), %rdi
        movl    $256, %eax
        movl    $1, %r8d
        movl    $4096, %r9d
        call    arg_num
        shlq    $10, %rax
        movq    %rax, req_bytes(%rip)
        movq    %rax, %rcx              /* total_reqs = ceil(total_bytes / req_bytes) */
        movq    total_bytes(%rip), %rax
        addq    %rcx, %rax
        decq    %rax
        xorl    %edx, %edx
        divq    %rcx
        movq    %rax, total_reqs(%rip)

        leaq    k_depth(%rip), %rdi
        movl    $32, %eax
        movl    $1, %r8d
        movl    $MAX_DEPTH, %r9d
        call    arg_num
        movq    %rax, depth(%rip)

        leaq    k_batch(%rip), %rdi
        movl    $8, %eax
        movl    $1, %r8d
        movl    $MAX_DEPTH, %r9d
        call    arg_num
        movq    %rax, batch(%rip)

        leaq    k_flush(%rip), %rdi
        movl    $1, %eax
        xorl    %r8d, %r8d
        movl    $1, %r9d
        call    arg_num
        movb    %al, flush(%rip)

        leaq    k_mode(%rip), %rdi
        call    find_arg
        testq   %rsi, %rsi
        jz      2f                      /* default: read */
        leaq    w_read(%rip), %rdi
        call    match_word
        je      2f
        leaq    w_write(%rip), %rdi
        call    match_word
        jne     1f
        movb    $1, mode_write(%rip)
        movl    $T_OUT, req_type(%rip)
        jmp     2f
1:      leaq    k_mode(%rip), %rdi
        jmp     bad_arg
2:
        leaq    k_vblk(%rip), %rdi
        call    find_arg
        testq   %rsi, %rsi
        jz      3f
        call    parse_num
        testl   %ecx, %ecx
        jz      4f
        pushq   %rax
        call    at_token_end
        popq    %rax
        jne     4f
        testq   %rax, %rax
        jz      4f
        movq    %rax, vblk_arg(%rip)
3:      ret
4:      leaq    k_vblk(%rip), %rdi
        jmp     bad_arg

/* ---------------------------------------------------------------- */
/* Device discovery. -> %rbx = transport base, or fail (no-device). */

/* check_dev: %rbx = candidate base. ZF=1 for a version-2 block device.
 * Remembers a legacy (version 1) block device for the error message.
 * Clobbers %eax. MagicValue and Version are read first (spec 4.2.3.1.1). */
check_dev:
        movl    R_MAGIC(%rbx), %eax
        cmpl    $VIRTIO_MAGIC, %eax
        jne     9f
        movl    R_VERSION(%rbx), %eax
        cmpl    $2, %eax
        je      1f
        movl    R_DEVICE_ID(%rbx), %eax
        cmpl    $VIRTIO_ID_BLOCK, %eax
        jne     8f
        movb    $1, saw_legacy(%rip)
8:      cmpl    $-1, %eax               /* ZF=0 (a device id is never ~0) */
        ret
1:      movl    R_DEVICE_ID(%rbx), %eax
        cmpl    $VIRTIO_ID_BLOCK, %eax
9:      ret

probe:
        movq    vblk_arg(%rip), %rbx
        testq   %rbx, %rbx
        jz      1f
        call    check_dev
        je      9f
        jmp     7f
1:      movl    $FS_MMIO_BASE, %ebx     /* zero-extends; a sign-extended disp32 would not */
        movl    $FS_MMIO_COUNT, %ecx
2:      pushq   %rcx
        call    check_dev
        popq    %rcx
        je      9f
        addq    $FS_MMIO_STRIDE, %rbx
        decl    %ecx
        jnz     2b
        movl    $QEMU_MMIO_BASE + (QEMU_MMIO_COUNT - 1) * QEMU_MMIO_STRIDE, %ebx
        movl    $QEMU_MMIO_COUNT, %ecx
3:      pushq   %rcx
        call    check_dev
        popq    %rcx
        je      9f
        subq    $QEMU_MMIO_STRIDE, %rbx
        decl    %ecx
        jnz     3b
7:      xorl    %ebx, %ebx
        leaq    s_no_device(%rip), %rsi
        cmpb    $0, saw_legacy(%rip)
        je      fail
        leaq    s_legacy_only(%rip), %rsi
        jmp     fail
9:      ret

/* ---------------------------------------------------------------- */
/* Device initialisation (virtio 1.x 3.1.1 and 4.2.3). */

dev_init:
        movl    $0, R_STATUS(%rbx)      /* reset ... */
        movl    $1000, %ecx
1:      movl    R_STATUS(%rbx), %eax    /* ... done when Status reads 0 */
        testl   %eax, %eax
        jz      2f
        decl    %ecx
        jnz     1b
        leaq    s_reset_stuck(%rip), %rsi
        jmp     fail
2:      movl    $S_ACKNOWLEDGE, R_STATUS(%rbx)
        movl    $S_ACKNOWLEDGE | S_DRIVER, R_STATUS(%rbx)

        movl    $1, R_DEV_FEAT_SEL(%rbx)
        movl    R_DEV_FEAT(%rbx), %eax
        movl    %eax, dev_feat_hi(%rip)
        movl    $0, R_DEV_FEAT_SEL(%rbx)
        movl    R_DEV_FEAT(%rbx), %eax
        movl    %eax, dev_feat_lo(%rip)
        testl   $F_VERSION_1, dev_feat_hi(%rip)
        jnz     3f
        leaq    s_no_version1(%rip), %rsi
        jmp     fail
3:      andl    $F_BLK_RO | F_BLK_FLUSH, %eax
        movl    %eax, drv_feat_lo(%rip)
        movl    $0, R_DRV_FEAT_SEL(%rbx)
        movl    %eax, R_DRV_FEAT(%rbx)
        movl    $1, R_DRV_FEAT_SEL(%rbx)
        movl    $F_VERSION_1, R_DRV_FEAT(%rbx)
        movl    $S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK, R_STATUS(%rbx)
        movl    R_STATUS(%rbx), %eax
        testl   $S_FEATURES_OK, %eax
        jnz     4f
        leaq    s_features_refused(%rip), %rsi
        jmp     fail
4:      cmpb    $0, mode_write(%rip)
        je      5f
        testl   $F_BLK_RO, drv_feat_lo(%rip)
        jz      5f
        leaq    s_read_only(%rip), %rsi
        jmp     fail

5:      movl    R_CONFIG_GEN(%rbx), %ecx    /* capacity: 2 x 32-bit under ConfigGeneration */
        movl    R_CONFIG(%rbx), %eax
        movl    R_CONFIG + 4(%rbx), %edx
        movl    R_CONFIG_GEN(%rbx), %esi
        cmpl    %esi, %ecx
        jne     5b
        shlq    $32, %rdx
        orq     %rdx, %rax
        movq    %rax, capacity(%rip)
        movq    req_bytes(%rip), %rcx   /* one request must fit; more I/O wraps */
        cmpq    total_bytes(%rip), %rcx
        jbe     55f
        movq    total_bytes(%rip), %rcx
55:     shrq    $9, %rcx
        cmpq    %rcx, %rax
        jae     6f
        leaq    s_too_small(%rip), %rsi
        jmp     fail_num                /* with the capacity in sectors */

6:      movl    $0, R_QUEUE_SEL(%rbx)
        movl    R_QUEUE_READY(%rbx), %eax
        testl   %eax, %eax
        jz      7f
        leaq    s_queue_in_use(%rip), %rsi
        jmp     fail
7:      movl    R_QUEUE_NUM_MAX(%rbx), %eax
        movl    $QSIZE_WANT, %ecx
8:      cmpl    %eax, %ecx              /* largest power of two <= QueueNumMax, at most 128 */
        jbe     9f
        shrl    %ecx
        jnz     8b
9:      cmpl    $3, %ecx                /* one request needs 3 descriptors */
        jae     10f
        leaq    s_queue_small(%rip), %rsi
        jmp     fail_num                /* with QueueNumMax */
10:     movq    %rcx, qsize(%rip)
        leaq    -1(%rcx), %r15
        movl    %ecx, %eax              /* depth = min(depth, qsize / 3) */
        xorl    %edx, %edx
        movl    $3, %esi
        divl    %esi
        cmpq    depth(%rip), %rax
        jae     11f
        movq    %rax, depth(%rip)
11:     movq    depth(%rip), %rax
        cmpq    batch(%rip), %rax
        jae     12f
        movq    %rax, batch(%rip)
12:     movl    qsize(%rip), %eax
        movl    %eax, R_QUEUE_NUM(%rbx)

        cld                             /* zero the rings, headers and status bytes */
        movl    $QDESC, %edi
        movl    $(QAREA_END - QDESC) / 8, %ecx
        xorl    %eax, %eax
        rep stosq
        call    setup_slots
        movw    $AVAIL_NO_INTERRUPT, QAVAIL

        movl    $QDESC, R_QUEUE_DESC_LO(%rbx)
        movl    $0, R_QUEUE_DESC_HI(%rbx)
        movl    $QAVAIL, R_QUEUE_AVAIL_LO(%rbx)
        movl    $0, R_QUEUE_AVAIL_HI(%rbx)
        movl    $QUSED, R_QUEUE_USED_LO(%rbx)
        movl    $0, R_QUEUE_USED_HI(%rbx)
        movl    $1, R_QUEUE_READY(%rbx)
        movl    $S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK, R_STATUS(%rbx)
        movl    R_STATUS(%rbx), %eax
        testl   $S_NEEDS_RESET | S_FAILED, %eax
        jz      13f
        leaq    s_bad_status(%rip), %rsi
        jmp     fail_num
13:     ret

/* setup_slots: fixed descriptor chains and the free-slot stack; the data
 * buffers get 0xFF (read: nothing looks like valid data before the device
 * writes it) or zeros (write: the pattern's zero tail). */
setup_slots:
        xorl    %ecx, %ecx              /* slot */
1:      cmpq    depth(%rip), %rcx
        jae     2f
        leaq    (%rcx,%rcx,2), %rdx     /* head = 3*slot */
        shlq    $4, %rdx
        addq    $QDESC, %rdx            /* rdx = &desc[head] */
        movq    %rcx, %rax              /* header descriptor */
        shlq    $4, %rax
        addq    $HDR_BASE, %rax
        movq    %rax, (%rdx)
        movl    $16, 8(%rdx)
        movw    $D_NEXT, 12(%rdx)
        leaq    (%rcx,%rcx,2), %rax
        incl    %eax
        movw    %ax, 14(%rdx)
        movq    %rcx, %rax              /* data descriptor (length set per request) */
        imulq   req_bytes(%rip), %rax
        addq    $DATA_BASE, %rax
        movq    %rax, 16(%rdx)
        movl    $0, 24(%rdx)
        movw    $D_NEXT | D_WRITE, 28(%rdx)
        cmpb    $0, mode_write(%rip)
        je      3f
        movw    $D_NEXT, 28(%rdx)       /* the device only reads a write's data */
3:      leaq    (%rcx,%rcx,2), %rax
        addl    $2, %eax
        movw    %ax, 30(%rdx)
        leaq    STATUS_BASE(%rcx), %rax /* status descriptor */
        movq    %rax, 32(%rdx)
        movl    $1, 40(%rdx)
        movw    $D_WRITE, 44(%rdx)
        movw    $0, 46(%rdx)
        movq    depth(%rip), %rax       /* free stack, slot 0 on top */
        subq    %rcx, %rax
        decq    %rax
        leaq    free_stack(%rip), %rdx
        movq    %rcx, (%rdx,%rax,8)
        incq    %rcx
        jmp     1b
2:      movq    %rcx, free_count(%rip)
        movq    depth(%rip), %rcx       /* fill the data buffers */
        imulq   req_bytes(%rip), %rcx
        shrq    $3, %rcx
        movl    $DATA_BASE, %edi
        movq    $-1, %rax
        cmpb    $0, mode_write(%rip)
        je      4f
        xorl    %eax, %eax
4:      rep stosq
        ret

/* ---------------------------------------------------------------- */
/* The I/O loop. */

/* rdtsc64: %rax = TSC. Clobbers %rdx. */
rdtsc64:
        rdtsc
        shlq    $32, %rdx
        orq     %rdx, %rax
        ret

run_io:
        xorl    %r12d, %r12d
        xorl    %r13d, %r13d
        xorl    %r14d, %r14d
        call    rdtsc64
        movq    %rax, tsc_start(%rip)
        call    submit
1:      cmpq    total_reqs(%rip), %r14
        jae     5f
        call    wait_used               /* -> %eax = used.idx */
        movl    %eax, %r9d
2:      cmpw    %r9w, %r13w             /* consume used[r13 .. idx) */
        je      4f
        movq    %r13, %rax
        andq    %r15, %rax
        movl    QUSED + 4(,%rax,8), %eax    /* used elem id = chain head */
        movl    %eax, %ecx
        xorl    %edx, %edx
        movl    $3, %esi
        divl    %esi                    /* eax = slot, edx = head % 3 */
        testl   %edx, %edx
        jnz     8f
        cmpq    depth(%rip), %rax
        jae     8f
        leaq    slot_busy(%rip), %rdx
        cmpb    $0, (%rdx,%rax)
        je      8f
        movb    $0, (%rdx,%rax)
        movzbl  STATUS_BASE(%rax), %edx
        testl   %edx, %edx
        jnz     9f
        cmpb    $0, mode_write(%rip)
        jne     3f
        pushq   %rax
        call    verify_slot
        popq    %rax
3:      movq    free_count(%rip), %rdx  /* push the slot back */
        leaq    free_stack(%rip), %rsi
        movq    %rax, (%rsi,%rdx,8)
        incq    %rdx
        movq    %rdx, free_count(%rip)
        decq    inflight(%rip)
        incq    %r14
        incq    %r13
        jmp     2b
4:      movq    free_count(%rip), %rax  /* refill in batches */
        cmpq    batch(%rip), %rax
        jae     6f
        cmpq    $0, inflight(%rip)
        jne     1b
6:      call    submit
        jmp     1b

5:      cmpb    $0, mode_write(%rip)    /* write: one FLUSH at the end */
        je      7f
        cmpb    $0, flush(%rip)
        je      7f
        testl   $F_BLK_FLUSH, drv_feat_lo(%rip)
        jz      7f
        call    do_flush
7:      call    rdtsc64
        subq    tsc_start(%rip), %rax
        movq    %rax, tsc_delta(%rip)
        ret
8:      movl    %ecx, %eax
        leaq    s_bad_used_id(%rip), %rsi
        jmp     fail_num
9:      movl    %edx, %eax
        leaq    s_io_status(%rip), %rsi
        jmp     fail_num

/* submit: put requests into every free slot while bytes remain, then
 * publish avail.idx once and notify unless the device said not to.
 * Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11. */
submit:
        xorl    %r11d, %r11d            /* requests added in this batch */
1:      movq    free_count(%rip), %rax
        testq   %rax, %rax
        jz      5f
        movq    remaining(%rip), %rcx
        testq   %rcx, %rcx
        jz      5f
        decq    %rax
        movq    %rax, free_count(%rip)
        leaq    free_stack(%rip), %rdx
        movq    (%rdx,%rax,8), %r8      /* r8 = slot */
        movq    req_bytes(%rip), %r9
        cmpq    %rcx, %r9
        cmova   %rcx, %r9               /* r9 = length = min(req, remaining) */
        subq    %r9, %rcx
        movq    %rcx, remaining(%rip)
        movq    next_lba(%rip), %r10    /* r10 = first sector */
        movq    %r9, %rax
        shrq    $9, %rax
        addq    %r10, %rax
        cmpq    capacity(%rip), %rax
        jbe     6f
        xorl    %r10d, %r10d            /* would pass the end of the disk: wrap to 0 */
        movq    %r9, %rax
        shrq    $9, %rax
6:      movq    %rax, next_lba(%rip)
        leaq    slot_lba(%rip), %rax
        movq    %r10, (%rax,%r8,8)
        leaq    slot_len(%rip), %rax
        movq    %r9, (%rax,%r8,8)
        leaq    slot_busy(%rip), %rax
        movb    $1, (%rax,%r8)
        movq    %r8, %rax               /* virtio_blk_outhdr {type, reserved, sector} */
        shlq    $4, %rax
        movl    req_type(%rip), %ecx
        movl    %ecx, HDR_BASE(%rax)
        movl    $0, HDR_BASE + 4(%rax)
        movq    %r10, HDR_BASE + 8(%rax)
        movb    $0xff, STATUS_BASE(%r8) /* not a valid status: the device must write it */
        leaq    (%r8,%r8,2), %rdi       /* rdi = head = 3*slot */
        movq    %rdi, %rax
        shlq    $4, %rax
        movl    %r9d, QDESC + 16 + 8(%rax)  /* desc[head + 1].len */
        cmpb    $0, mode_write(%rip)
        je      3f
        movq    %r8, %rax               /* write: the sector pattern */
        imulq   req_bytes(%rip), %rax
        addq    $DATA_BASE, %rax
        movq    %r9, %rcx
        shrq    $9, %rcx
        movabsq $PATTERN_MAGIC, %rdx
2:      movq    %r10, (%rax)
        movq    %rdx, 8(%rax)
        incq    %r10
        addq    $512, %rax
        decq    %rcx
        jnz     2b
3:      movq    %r12, %rax              /* avail.ring[idx % qsize] = head */
        andq    %r15, %rax
        movw    %di, QAVAIL + 4(,%rax,2)
        incq    %r12
        incq    inflight(%rip)
        incl    %r11d
        jmp     1b
5:      testl   %r11d, %r11d
        jz      9f
        /* x86 stores are not reordered with each other: the ring entries and
         * descriptors above are visible before this index. */
        movw    %r12w, QAVAIL + 2
        mfence                          /* ... but the used.flags load must not pass it */
        testw   $USED_NO_NOTIFY, QUSED
        jnz     9f
        movl    $0, R_QUEUE_NOTIFY(%rbx)    /* queue 0 */
        incq    notifies(%rip)
9:      ret

/* wait_used: spin until used.idx != %r13w -> %eax = used.idx.
 * Every STALL_TSC ticks without progress it reads Status: DEVICE_NEEDS_RESET
 * is fatal, and so is STALL_LIMIT such periods. Clobbers %rcx, %rdx, %r10, %r11. */
wait_used:
        call    rdtsc64
        movq    %rax, %r10
        xorl    %r11d, %r11d
1:      movzwl  QUSED + 2, %eax
        cmpw    %ax, %r13w
        jne     9f
        pause
        call    rdtsc64
        movq    %rax, %rcx
        subq    %r10, %rcx
        movq    $STALL_TSC, %rdx
        cmpq    %rdx, %rcx
        jb      1b
        movq    %rax, %r10
        movl    R_STATUS(%rbx), %eax
        testl   $S_NEEDS_RESET, %eax
        jnz     8f
        incl    %r11d
        cmpl    $STALL_LIMIT, %r11d
        jb      1b
        leaq    s_timeout(%rip), %rsi
        jmp     fail
8:      leaq    s_needs_reset(%rip), %rsi
        jmp     fail_num
9:      ret

/* verify_slot: %rax = slot of a completed read. Checks the first, middle and
 * last sector of the request (each at most once: a checked sector is
 * poisoned). Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8. */
verify_slot:
        leaq    slot_lba(%rip), %rdx
        movq    (%rdx,%rax,8), %rsi     /* rsi = first sector */
        leaq    slot_len(%rip), %rdx
        movq    (%rdx,%rax,8), %r8
        shrq    $9, %r8                 /* r8 = sectors */
        imulq   req_bytes(%rip), %rax
        leaq    DATA_BASE(%rax), %rdi   /* rdi = buffer */
        xorl    %ecx, %ecx
        call    check_sector
        cmpq    $3, %r8                 /* middle: only when distinct from first and last */
        jb      1f
        movq    %r8, %rcx
        shrq    %rcx
        call    check_sector
1:      cmpq    $2, %r8                 /* last: only when distinct from the first */
        jb      2f
        leaq    -1(%r8), %rcx
        jmp     check_sector
2:      ret

/* check_sector: %rdi = buffer, %rsi = its first sector, %rcx = index. */
check_sector:
        movq    %rcx, %rdx
        shlq    $9, %rdx
        addq    %rdi, %rdx              /* rdx = &sector */
        addq    %rsi, %rcx              /* rcx = expected LBA */
        cmpq    %rcx, (%rdx)
        jne     8f
        movabsq $PATTERN_MAGIC, %rax
        cmpq    %rax, 8(%rdx)
        jne     8f
        movabsq $POISON, %rax
        movq    %rax, (%rdx)
        movq    %rax, 8(%rdx)
        ret
8:      pushq   %rdx
        pushq   %rcx
        leaq    s_baddata(%rip), %rsi
        call    puts
        popq    %rax
        call    putdec
        leaq    s_got(%rip), %rsi
        call    puts
        popq    %rdx
        movq    (%rdx), %rax
        call    puthex64
        movb    $'\n', %al
        call    putc
        movl    $0, R_STATUS(%rbx)      /* the device is fine; just stop it */
        jmp     reset

/* do_flush: one VIRTIO_BLK_T_FLUSH on slot 0 (header -> status, no data).
 * Called with nothing in flight. */
do_flush:
        movw    $2, QDESC + 14          /* desc[0].next = status descriptor */
        movl    $T_FLUSH, HDR_BASE
        movl    $0, HDR_BASE + 4
        movq    $0, HDR_BASE + 8
        movb    $0xff, STATUS_BASE
        movq    %r12, %rax
        andq    %r15, %rax
        movw    $0, QAVAIL + 4(,%rax,2)
        incq    %r12
        movw    %r12w, QAVAIL + 2
        mfence
        testw   $USED_NO_NOTIFY, QUSED
        jnz     1f
        movl    $0, R_QUEUE_NOTIFY(%rbx)
        incq    notifies(%rip)
1:      call    wait_used
        movq    %r13, %rax
        andq    %r15, %rax
        movl    QUSED + 4(,%rax,8), %eax
        incq    %r13
        testl   %eax, %eax
        jz      2f
        leaq    s_bad_used_id(%rip), %rsi
        jmp     fail_num
2:      movzbl  STATUS_BASE, %eax
        testl   %eax, %eax
        jz      3f
        leaq    s_flush_status(%rip), %rsi
        jmp     fail_num
3:      movw    $1, QDESC + 14
        ret

/* ---------------------------------------------------------------- */
/* Output. */

/* putdec: %rax in decimal. Clobbers %rax, %rcx, %rdx, %rsi. */
putdec:
        leaq    decbuf_end(%rip), %rsi
        movl    $10, %ecx
1:      xorl    %edx, %edx
        divq    %rcx
        addb    $'0', %dl
        decq    %rsi
        movb    %dl, (%rsi)
        testq   %rax, %rax
        jnz     1b
        jmp     puts

/* puthex32: %eax as 8 hex digits. Clobbers %rax, %rcx, %rdx, %r8. */
puthex32:
        movl    %eax, %r8d
        movl    $8, %ecx
1:      roll    $4, %r8d
        movl    %r8d, %eax
        andl    $0xf, %eax
        cmpb    $10, %al
        jb      2f
        addb    $('A' - '0' - 10), %al
2:      addb    $'0', %al
        call    putc
        decl    %ecx
        jnz     1b
        ret

/* putkv: print %rsi (a " key=" string) then %rax in decimal. */
putkv:
        pushq   %rax
        call    puts
        popq    %rax
        jmp     putdec

print_dev:
        leaq    s_dev(%rip), %rsi
        call    puts
        movl    %ebx, %eax
        call    puthex32
        leaq    s_sectors(%rip), %rsi
        movq    capacity(%rip), %rax
        call    putkv
        leaq    s_qsize(%rip), %rsi
        movq    qsize(%rip), %rax
        call    putkv
        leaq    s_depth(%rip), %rsi
        movq    depth(%rip), %rax
        call    putkv
        leaq    s_features(%rip), %rsi
        call    puts
        movl    dev_feat_hi(%rip), %eax
        call    puthex32
        movl    dev_feat_lo(%rip), %eax
        call    puthex32
        movb    $'\n', %al
        jmp     putc

print_done:
        leaq    s_done(%rip), %rsi
        call    puts
        leaq    w_read(%rip), %rsi
        cmpb    $0, mode_write(%rip)
        je      1f
        leaq    w_write(%rip), %rsi
1:      call    puts
        leaq    s_bytes(%rip), %rsi
        movq    total_bytes(%rip), %rax
        call    putkv
        leaq    s_reqs(%rip), %rsi
        movq    %r14, %rax
        call    putkv
        leaq    s_notifies(%rip), %rsi
        movq    notifies(%rip), %rax
        call    putkv
        leaq    s_tsc(%rip), %rsi
        movq    tsc_delta(%rip), %rax
        call    putkv
        movb    $'\n', %al
        jmp     putc

/* ---------------------------------------------------------------- */
/* Strings and variables (no .bss: everything is in the file). */

k_mib:          .asciz  "mib="
k_req:          .asciz  "req="
k_depth:        .asciz  "depth="
k_batch:        .asciz  "batch="
k_mode:         .asciz  "mode="
k_flush:        .asciz  "flush="
k_vblk:         .asciz  "vblk="
w_read:         .asciz  "read"
w_write:        .asciz  "write"
s_error:        .asciz  "VBLK-ERROR "
s_bad_args:     .asciz  "bad-args "
s_no_device:    .asciz  "no-device"
s_legacy_only:  .asciz  "legacy-transport-only"
s_reset_stuck:  .asciz  "reset-stuck"
s_no_version1:  .asciz  "no-version-1"
s_features_refused: .asciz "features-refused"
s_read_only:    .asciz  "read-only"
s_too_small:    .asciz  "image-too-small sectors"
s_queue_in_use: .asciz  "queue-in-use"
s_queue_small:  .asciz  "queue-too-small max"
s_bad_status:   .asciz  "status"
s_bad_used_id:  .asciz  "bad-used-id"
s_io_status:    .asciz  "io-status"
s_flush_status: .asciz  "flush-status"
s_needs_reset:  .asciz  "needs-reset status"
s_timeout:      .asciz  "timeout"
s_baddata:      .asciz  "VBLK-BADDATA lba="
s_got:          .asciz  " got="
s_dev:          .asciz  "VBLK-DEV at="
s_sectors:      .asciz  " sectors="
s_qsize:        .asciz  " qsize="
s_depth:        .asciz  " depth="
s_features:     .asciz  " features="
s_done:         .asciz  "VBLK-DONE mode="
s_bytes:        .asciz  " bytes="
s_reqs:         .asciz  " reqs="
s_notifies:     .asciz  " notifies="
s_tsc:          .asciz  " tsc="

decbuf:         .skip   24
decbuf_end:     .byte   0

        .balign 8
total_bytes:    .quad   0
remaining:      .quad   0
req_bytes:      .quad   0
total_reqs:     .quad   0
depth:          .quad   0
batch:          .quad   0
vblk_arg:       .quad   0
capacity:       .quad   0
qsize:          .quad   0
next_lba:       .quad   0
free_count:     .quad   0
inflight:       .quad   0
notifies:       .quad   0
tsc_start:      .quad   0
tsc_delta:      .quad   0
err_num:        .quad   0
err_suffix:     .quad   0
req_type:       .long   T_IN
dev_feat_lo:    .long   0
dev_feat_hi:    .long   0
drv_feat_lo:    .long   0
mode_write:     .byte   0
flush:          .byte   0
saw_legacy:     .byte   0
err_has_num:    .byte   0
        .balign 8
free_stack:     .fill   MAX_DEPTH, 8, 0
slot_lba:       .fill   MAX_DEPTH, 8, 0
slot_len:       .fill   MAX_DEPTH, 8, 0
slot_busy:      .fill   MAX_DEPTH, 1, 0
