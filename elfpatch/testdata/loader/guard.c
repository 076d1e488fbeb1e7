/* guard.c: linked into the running target only, to put it under the
 * restrictions hardened services use (TICK_GUARD in the environment):
 *
 *   mdwe     prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): no mapping may
 *            become executable after it was writable (systemd's
 *            MemoryDenyWriteExecute on kernels >= 6.3)
 *   nomemfd  a seccomp filter failing memfd_create with EPERM
 *   noexec   a seccomp filter failing mmap/mprotect with PROT_EXEC (EPERM)
 *
 * It reports "guard: <mode>" on stderr once in force, and exits 3 if the
 * kernel refuses. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static int filter(struct sock_filter *f, unsigned short n)
{
	struct sock_fprog prog = {.len = n, .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

#define NR offsetof(struct seccomp_data, nr)
#define ARG2 offsetof(struct seccomp_data, args[2])
#define DENY (SECCOMP_RET_ERRNO | EPERM)

__attribute__((constructor)) static void guard(void)
{
	const char *mode = getenv("TICK_GUARD");
	int rc = 0;
	if (!mode || !*mode)
		return;
	if (strcmp(mode, "mdwe") == 0) {
		rc = prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0);
	} else if (strcmp(mode, "nomemfd") == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, DENY),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		rc = filter(f, sizeof f / sizeof f[0]);
	} else if (strcmp(mode, "noexec") == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 1, 0),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 3),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG2),
			BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, DENY),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		rc = filter(f, sizeof f / sizeof f[0]);
	} else {
		fprintf(stderr, "guard: unknown mode %s\n", mode);
		exit(3);
	}
	if (rc != 0) {
		fprintf(stderr, "guard: %s refused: %s\n", mode, strerror(errno));
		exit(3);
	}
	fprintf(stderr, "guard: %s\n", mode);
}
