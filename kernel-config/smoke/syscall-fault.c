/*
 * Checks kernel-config/patches/0001 (finish a SYSCALL that faulted at
 * entry_SYSCALL_64) on a CPU where SYSCALL works normally: QEMU TCG or
 * hardware KVM.
 *
 * The program does what a PVM host does to a guest SYSCALL. It loads RCX
 * with the return address and R11 with flags, then jumps to
 * entry_SYSCALL_64 while still in user mode. The instruction fetch faults
 * at CPL 3 with ip == entry_SYSCALL_64, which is the case the patch handles.
 * Without the patch, the first call dies with SIGSEGV.
 *
 * Usage: syscall-fault <entry_SYSCALL_64 address in hex, from System.map>
 * Prints SYSCALL-FAULT-OK or SYSCALL-FAULT-FAIL (exit status 0 / 1).
 * Build: gcc -O1 -static -o syscall-fault syscall-fault.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define EFLAGS_CF   0x0001UL
#define EFLAGS_IF   0x0200UL
#define EFLAGS_IOPL 0x3000UL
#define EFLAGS_NT   0x4000UL

static unsigned long entry;

/* Returns the syscall result; *flags_out gets RFLAGS right after return. */
static long fault_syscall(long nr, long a1, long a2, long a3,
			  unsigned long flags_in, unsigned long *flags_out)
{
	long ret;
	unsigned long flags;

	asm volatile("lea 1f(%%rip), %%rcx\n\t"
		     "mov %[fl], %%r11\n\t"
		     "jmp *%[entry]\n"
		     "1:\n\t"
		     "pushfq\n\t"
		     "pop %[flo]\n\t"
		     : "=a"(ret), [flo] "=&r"(flags)
		     : "a"(nr), "D"(a1), "S"(a2), "d"(a3),
		       [entry] "m"(entry), [fl] "r"(flags_in)
		     : "rcx", "r11", "memory", "cc");
	if (flags_out)
		*flags_out = flags;
	return ret;
}

int main(int argc, char **argv)
{
	static const char msg[] = "syscall-fault: write() through the fault path\n";
	unsigned long flags;
	int fail = 0, status = 0;
	long r;

	if (argc != 2) {
		fprintf(stderr, "usage: %s ENTRY_SYSCALL_64_HEX\n", argv[0]);
		return 2;
	}
	entry = strtoul(argv[1], NULL, 16);

	r = fault_syscall(SYS_write, 1, (long)msg, sizeof msg - 1, EFLAGS_IF, NULL);
	if (r != (long)sizeof msg - 1) {
		printf("syscall-fault: write returned %ld\n", r);
		fail = 1;
	}

	r = fault_syscall(SYS_getpid, 0, 0, 0, EFLAGS_IF, NULL);
	if (r != getpid()) {
		printf("syscall-fault: getpid returned %ld, want %d\n", r, getpid());
		fail = 1;
	}

	/* An unknown number must give -ENOSYS, as with a real SYSCALL. */
	r = fault_syscall(1000, 0, 0, 0, EFLAGS_IF, NULL);
	if (r != -38) {
		printf("syscall-fault: syscall 1000 returned %ld, want -38\n", r);
		fail = 1;
	}

	/* R11 asks for CF, IOPL=3 and NT: CF is kept, IOPL and NT are not. */
	fault_syscall(SYS_getpid, 0, 0, 0,
		      EFLAGS_IF | EFLAGS_CF | EFLAGS_IOPL | EFLAGS_NT, &flags);
	if ((flags & (EFLAGS_IOPL | EFLAGS_NT)) || !(flags & EFLAGS_IF) ||
	    !(flags & EFLAGS_CF)) {
		printf("syscall-fault: flags after return %#lx\n", flags);
		fail = 1;
	}

	/* fork: the child returns from the same frame, to the same RCX. */
	r = fault_syscall(SYS_fork, 0, 0, 0, EFLAGS_IF, NULL);
	if (r == 0)
		_exit(7);
	if (r < 0 || waitpid((pid_t)r, &status, 0) != r ||
	    !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
		printf("syscall-fault: fork returned %ld, status %#x\n", r, status);
		fail = 1;
	}

	for (int i = 0; i < 10000 && !fail; i++) {
		if (fault_syscall(SYS_getppid, 0, 0, 0, EFLAGS_IF, NULL) != getppid()) {
			printf("syscall-fault: getppid mismatch at iteration %d\n", i);
			fail = 1;
		}
	}

	puts(fail ? "SYSCALL-FAULT-FAIL" : "SYSCALL-FAULT-OK");
	return fail;
}
