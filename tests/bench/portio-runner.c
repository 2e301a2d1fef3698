/*
 * portio-runner: a minimal KVM runner for FireSharp's tiny PVH guests.
 *
 * It is the reference "floor" for the port-I/O exit-rate benchmark: it does
 * as little as possible per exit (one switch on the exit reason, one on the
 * port), so a VMM cannot be expected to beat it by much.
 *
 * Usage: portio-runner [-m MiB] [-i] [-v] [-t SECS] [-q GPA] FILE.elf [cmdline]
 *   -m MiB  guest RAM (default 128)
 *   -i      create the in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP,
 *           KVM_CREATE_PIT2), for a like-for-like comparison with a VMM that
 *           does; the guests themselves never need them
 *   -v      log every MMIO exit and every unexpected port on stderr
 *   -t SECS stop the guest after SECS seconds of wall time (SIGALRM +
 *           kvm_run.immediate_exit); for guests that never stop, such as
 *           counter.elf. Ends with status 3.
 *   -q GPA  at the end, print the little-endian u64 at guest physical
 *           address GPA on stderr as `u64[GPA]=<decimal>` (e.g. -q 0x200000
 *           for counter.elf's counter)
 *
 * Output:
 *   stdout: the guest's COM1 output, byte for byte, and nothing else;
 *   stderr: one result line
 *     exits=<KVM_EXIT_IO count> seconds=<s> exits_per_sec=<r>
 *   followed by a detail line (port 0x80 / MMIO counts, how the guest ended).
 * seconds = wall time from just before the first KVM_RUN until the exit
 * that ended the guest (CLOCK_MONOTONIC).
 *
 * Exit status: 0 when the guest ended with the i8042 reset (port 0x64 <- 0xfe),
 * 2 on a triple fault (KVM_EXIT_SHUTDOWN), 3 when -t expired, 1 on any
 * other failure.
 *
 * Guest contract (PVH boot, Xen's arch-x86/hvm/start_info.h):
 *   the ELF's PT_LOAD segments are copied to their p_paddr; the entry is the
 *   desc of the "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY (18) in a PT_NOTE;
 *   the vCPU starts in 32-bit protected mode, paging off, flat CS/DS,
 *   EBX = start_info at START_INFO_GPA, command line at CMDLINE_GPA.
 *
 * Devices emulated (just enough for the guests in tests/guests):
 *   COM1 THR 0x3f8 (write -> stdout), COM1 LSR 0x3fd (reads 0x60: THR empty),
 *   i8042 0x64 (write 0xfe -> stop), port 0x80 (ignored), other ports:
 *   reads 0xff, writes ignored. MMIO reads return 0xFEEDC0DE... repeated
 *   byte pattern DE C0 ED FE; MMIO writes are ignored (logged with -v).
 *
 * Build: gcc -O2 -o build/bench/portio-runner tests/bench/portio-runner.c
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define START_INFO_GPA 0x6000ull
#define CMDLINE_GPA    0x20000ull
#define CMDLINE_MAX    2048
#define KVM_TSS_GPA    0xfffbd000ull
#define PVH_MAGIC      0x336ec578u
#define XEN_ELFNOTE_PHYS32_ENTRY 18

static int verbose;
static struct kvm_run *volatile g_run;
static volatile sig_atomic_t g_timed_out;

/* SIGALRM: make the current (or next) KVM_RUN return EINTR at once. */
static void on_alarm(int sig)
{
    (void)sig;
    g_timed_out = 1;
    if (g_run)
        g_run->immediate_exit = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "portio-runner: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fail(const char *msg)
{
    fprintf(stderr, "portio-runner: %s\n", msg);
    exit(1);
}

static int xioctl(int fd, unsigned long req, void *arg, const char *name)
{
    int r;
    do {
        r = ioctl(fd, req, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        die(name);
    return r;
}

/* Copies the PT_LOAD segments into guest RAM; returns the PVH entry. */
static uint32_t load_pvh_elf(const char *path, uint8_t *ram, uint64_t ram_size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die(path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    uint8_t *f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED)
        die("mmap ELF");
    close(fd);

    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f;
    if ((size_t)st.st_size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64)
        fail("not an x86_64 ELF64 file");
    if (eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size)
        fail("program headers out of file");

    uint32_t entry = 0;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(f + eh->e_phoff);
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_offset + ph[i].p_filesz > (uint64_t)st.st_size)
            fail("segment out of file");
        if (ph[i].p_type == PT_LOAD) {
            if (ph[i].p_filesz > ph[i].p_memsz || ph[i].p_paddr + ph[i].p_memsz > ram_size)
                fail("PT_LOAD does not fit in guest RAM");
            memcpy(ram + ph[i].p_paddr, f + ph[i].p_offset, ph[i].p_filesz);
            memset(ram + ph[i].p_paddr + ph[i].p_filesz, 0, ph[i].p_memsz - ph[i].p_filesz);
        } else if (ph[i].p_type == PT_NOTE) {
            uint64_t off = 0, align = ph[i].p_align > 4 ? ph[i].p_align : 4;
            while (off + sizeof(Elf64_Nhdr) <= ph[i].p_filesz) {
                const Elf64_Nhdr *n = (const Elf64_Nhdr *)(f + ph[i].p_offset + off);
                uint64_t name_off = off + sizeof(*n);
                uint64_t desc_off = name_off + ((n->n_namesz + align - 1) & ~(align - 1));
                uint64_t next = desc_off + ((n->n_descsz + align - 1) & ~(align - 1));
                if (desc_off + n->n_descsz > ph[i].p_filesz)
                    break;
                const uint8_t *name = f + ph[i].p_offset + name_off;
                if (n->n_type == XEN_ELFNOTE_PHYS32_ENTRY && n->n_namesz == 4 &&
                    memcmp(name, "Xen", 4) == 0 && n->n_descsz >= 4)
                    memcpy(&entry, f + ph[i].p_offset + desc_off, 4);
                off = next;
            }
        }
    }
    munmap(f, st.st_size);
    if (entry == 0)
        fail("no Xen PHYS32_ENTRY note: not a PVH ELF");
    return entry;
}

static void setup_start_info(uint8_t *ram, const char *cmdline)
{
    size_t len = strlen(cmdline);
    if (len >= CMDLINE_MAX)
        fail("command line too long");
    memcpy(ram + CMDLINE_GPA, cmdline, len + 1);

    /* struct hvm_start_info, version 0: magic, version, flags, nr_modules,
     * modlist_paddr, cmdline_paddr, rsdp_paddr. */
    uint8_t *si = ram + START_INFO_GPA;
    memset(si, 0, 64);
    uint32_t magic = PVH_MAGIC;
    uint64_t cmd = CMDLINE_GPA;
    memcpy(si + 0, &magic, 4);
    memcpy(si + 24, &cmd, 8);
}

static void set_cpuid(int kvm, int vcpu)
{
    int n = 256;
    struct kvm_cpuid2 *c;
    for (;;) {
        c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
        if (!c)
            fail("out of memory");
        c->nent = n;
        if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
            break;
        if (errno != E2BIG)
            die("KVM_GET_SUPPORTED_CPUID");
        free(c);
        n *= 2;
    }
    xioctl(vcpu, KVM_SET_CPUID2, c, "KVM_SET_CPUID2");
    free(c);
}

static void set_flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = sel;
    s->type = type;
    s->present = 1;
    s->dpl = 0;
    s->db = 1;
    s->s = 1;
    s->l = 0;
    s->g = 1;
}

static void setup_vcpu_pvh(int vcpu, uint32_t entry)
{
    struct kvm_sregs sr;
    xioctl(vcpu, KVM_GET_SREGS, &sr, "KVM_GET_SREGS");
    set_flat_seg(&sr.cs, 0x08, 0xb);    /* code, execute/read, accessed */
    set_flat_seg(&sr.ds, 0x10, 0x3);    /* data, read/write, accessed */
    sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
    sr.cr0 = 0x11;                      /* PE | ET, paging off */
    sr.cr3 = 0;
    sr.cr4 = 0;
    sr.efer = 0;
    /* TR and LDTR keep KVM's reset values (valid for VM entry). */
    xioctl(vcpu, KVM_SET_SREGS, &sr, "KVM_SET_SREGS");

    struct kvm_regs r;
    memset(&r, 0, sizeof(r));
    r.rip = entry;
    r.rbx = START_INFO_GPA;
    r.rflags = 0x2;
    xioctl(vcpu, KVM_SET_REGS, &r, "KVM_SET_REGS");
}

static void dump_vcpu(int vcpu)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(vcpu, KVM_GET_REGS, &r) < 0 || ioctl(vcpu, KVM_GET_SREGS, &s) < 0) {
        fprintf(stderr, "  (cannot read vCPU state: %s)\n", strerror(errno));
        return;
    }
    fprintf(stderr,
            "  rip=%#llx rsp=%#llx rflags=%#llx rax=%#llx rbx=%#llx rcx=%#llx rdx=%#llx rsi=%#llx rdi=%#llx\n"
            "  cs=%#x(dpl %u l %u db %u) ss=%#x cr0=%#llx cr3=%#llx cr4=%#llx efer=%#llx\n"
            "  gdt=%#llx/%#x idt=%#llx/%#x tr=%#x(base %#llx type %u)\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
            s.cs.selector, s.cs.dpl, s.cs.l, s.cs.db, s.ss.selector, s.cr0, s.cr3, s.cr4, s.efer,
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit, s.tr.selector, s.tr.base, s.tr.type);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t mem_mib = 128;
    uint64_t peek_gpa = 0;
    int irqchip = 0, peek = 0, opt;
    unsigned time_limit = 0;
    while ((opt = getopt(argc, argv, "m:ivt:q:")) != -1) {
        switch (opt) {
        case 'm': mem_mib = strtoull(optarg, NULL, 0); break;
        case 'i': irqchip = 1; break;
        case 'v': verbose = 1; break;
        case 't': time_limit = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'q': peek_gpa = strtoull(optarg, NULL, 0); peek = 1; break;
        default: goto usage;
        }
    }
    if (optind >= argc || argc - optind > 2) {
usage:
        fprintf(stderr, "usage: %s [-m MiB] [-i] [-v] [-t SECS] [-q GPA] FILE.elf [cmdline]\n", argv[0]);
        return 1;
    }
    const char *elf = argv[optind];
    const char *cmdline = optind + 1 < argc ? argv[optind + 1] : "";
    uint64_t ram_size = mem_mib << 20;
    if (mem_mib < 4 || mem_mib > 3072)
        fail("-m must be 4..3072 (RAM is one slot below the 3 GiB MMIO gap)");
    if (peek && peek_gpa + 8 > ram_size)
        fail("-q address is outside guest RAM");
    setvbuf(stdout, NULL, _IOLBF, 0);   /* guest lines appear as they come */

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        fail("unexpected KVM API version");
    int vm = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_GPA) < 0)
        die("KVM_SET_TSS_ADDR");
    if (irqchip) {
        xioctl(vm, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
        struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
        xioctl(vm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
    }

    uint8_t *ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        die("mmap guest RAM");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .flags = 0, .guest_phys_addr = 0,
        .memory_size = ram_size, .userspace_addr = (uint64_t)(uintptr_t)ram,
    };
    xioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");

    uint32_t entry = load_pvh_elf(elf, ram, ram_size);
    setup_start_info(ram, cmdline);

    int vcpu = xioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
    int run_size = xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    set_cpuid(kvm, vcpu);
    setup_vcpu_pvh(vcpu, entry);

    g_run = run;
    if (time_limit) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_alarm;       /* no SA_RESTART: KVM_RUN must see EINTR */
        sigaction(SIGALRM, &sa, NULL);
        alarm(time_limit);
    }

    uint64_t io_exits = 0, port80 = 0, mmio_exits = 0, other_exits = 0;
    const char *how = NULL;
    int status = 1;
    double t0 = now(), t1;

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno != EINTR && errno != EAGAIN)
                die("KVM_RUN");
            if (g_timed_out) {
                how = "time limit";
                status = 3;
                goto done;
            }
            continue;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            io_exits++;
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            uint16_t port = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (port == 0x80) {
                    port80 += run->io.count;
                } else if (port == 0x3f8) {
                    fwrite(data, run->io.size, run->io.count, stdout);
                } else if (port == 0x64 && data[0] == 0xfe) {
                    how = "i8042 reset";
                    status = 0;
                    goto done;
                } else if (verbose) {
                    fprintf(stderr, "io: out port %#x size %u value %#x\n", port, run->io.size, data[0]);
                }
            } else {
                uint8_t v = port == 0x3fd ? 0x60 : 0xff;   /* LSR: THRE | TEMT */
                memset(data, v, (size_t)run->io.size * run->io.count);
                if (verbose && port != 0x3fd)
                    fprintf(stderr, "io: in port %#x size %u\n", port, run->io.size);
            }
            break;
        }
        case KVM_EXIT_MMIO:
            mmio_exits++;
            if (run->mmio.is_write) {
                if (verbose) {
                    uint64_t v = 0;
                    memcpy(&v, run->mmio.data, run->mmio.len <= 8 ? run->mmio.len : 8);
                    fprintf(stderr, "mmio: write addr %#llx len %u value %#llx\n",
                            (unsigned long long)run->mmio.phys_addr, run->mmio.len, (unsigned long long)v);
                }
            } else {
                static const uint8_t pattern[4] = { 0xde, 0xc0, 0xed, 0xfe };
                for (unsigned i = 0; i < run->mmio.len && i < 8; i++)
                    run->mmio.data[i] = pattern[i % 4];
                if (verbose)
                    fprintf(stderr, "mmio: read addr %#llx len %u\n",
                            (unsigned long long)run->mmio.phys_addr, run->mmio.len);
            }
            break;
        case KVM_EXIT_SHUTDOWN:
            how = "shutdown (triple fault)";
            status = 2;
            goto done;
        case KVM_EXIT_HLT:
            how = "hlt";
            goto done;
        case KVM_EXIT_INTERNAL_ERROR:
            fprintf(stderr, "portio-runner: KVM_EXIT_INTERNAL_ERROR suberror %u\n", run->internal.suberror);
            dump_vcpu(vcpu);
            how = "internal error";
            goto done;
        case KVM_EXIT_FAIL_ENTRY:
            fprintf(stderr, "portio-runner: KVM_EXIT_FAIL_ENTRY reason %#llx\n",
                    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            dump_vcpu(vcpu);
            how = "entry failure";
            goto done;
        default:
            other_exits++;
            fprintf(stderr, "portio-runner: unhandled exit reason %u\n", run->exit_reason);
            dump_vcpu(vcpu);
            how = "unhandled exit";
            goto done;
        }
    }
done:
    t1 = now();
    fflush(stdout);
    double secs = t1 - t0;
    fprintf(stderr, "exits=%llu seconds=%.6f exits_per_sec=%.0f\n",
            (unsigned long long)io_exits, secs, secs > 0 ? io_exits / secs : 0.0);
    fprintf(stderr, "detail: port80=%llu mmio_exits=%llu other_exits=%llu end=%s\n",
            (unsigned long long)port80, (unsigned long long)mmio_exits,
            (unsigned long long)other_exits, how);
    if (peek) {
        uint64_t v;
        memcpy(&v, ram + peek_gpa, 8);
        fprintf(stderr, "u64[%#llx]=%llu\n", (unsigned long long)peek_gpa, (unsigned long long)v);
    }
    if (status != 0 && verbose)
        dump_vcpu(vcpu);
    return status;
}
