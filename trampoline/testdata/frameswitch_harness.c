/*
 * Runs one frame-switch stub for frameswitch_test.go.
 *
 * Built by the test: gcc -O1 -o harness frameswitch_harness.c
 *
 * Reads from stdin (hex numbers, blobs as hex digits on one line):
 *   code ADDR LEN \n HEX        the stub, mapped read+exec at ADDR
 *   target ADDR                 where the stub must jump: gets a jmp to fs_target
 *   scratch ADDR LEN \n HEX     writable area, initial contents
 *   stack ADDR LEN \n HEX       the fake stack region, initial contents
 *   enter RSP                   rsp at stub entry (CFA-OldSize)
 *   regs V0 .. V15              register values at entry, DWARF order (V7 ignored)
 * Every region is mapped with MAP_FIXED_NOREPLACE at the pages holding it.
 *
 * Enters the stub as a callee's ret would (rsp set, every register
 * loaded), and prints what fs_target saw:
 *   regs V0 .. V15              registers at the target, DWARF order (V7 = rsp)
 *   stack HEX                   the stack region after the stub
 *   scratch HEX                 the scratch region after the stub
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

unsigned long fs_init[16], fs_seen[16], fs_saved_rsp, fs_enter_rsp, fs_stub;

void fs_enter(void);
void fs_target(void);

__asm__(
	".text\n"
	".globl fs_enter\n"
	"fs_enter:\n"
	"	push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
	"	mov %rsp, fs_saved_rsp(%rip)\n"
	"	mov fs_init+0(%rip), %rax\n"
	"	mov fs_init+8(%rip), %rdx\n"
	"	mov fs_init+16(%rip), %rcx\n"
	"	mov fs_init+24(%rip), %rbx\n"
	"	mov fs_init+32(%rip), %rsi\n"
	"	mov fs_init+40(%rip), %rdi\n"
	"	mov fs_init+48(%rip), %rbp\n"
	"	mov fs_init+64(%rip), %r8\n"
	"	mov fs_init+72(%rip), %r9\n"
	"	mov fs_init+80(%rip), %r10\n"
	"	mov fs_init+88(%rip), %r11\n"
	"	mov fs_init+96(%rip), %r12\n"
	"	mov fs_init+104(%rip), %r13\n"
	"	mov fs_init+112(%rip), %r14\n"
	"	mov fs_init+120(%rip), %r15\n"
	"	mov fs_enter_rsp(%rip), %rsp\n"
	"	jmp *fs_stub(%rip)\n"
	".globl fs_target\n"
	"fs_target:\n"
	"	mov %rax, fs_seen+0(%rip)\n"
	"	mov %rdx, fs_seen+8(%rip)\n"
	"	mov %rcx, fs_seen+16(%rip)\n"
	"	mov %rbx, fs_seen+24(%rip)\n"
	"	mov %rsi, fs_seen+32(%rip)\n"
	"	mov %rdi, fs_seen+40(%rip)\n"
	"	mov %rbp, fs_seen+48(%rip)\n"
	"	mov %rsp, fs_seen+56(%rip)\n"
	"	mov %r8, fs_seen+64(%rip)\n"
	"	mov %r9, fs_seen+72(%rip)\n"
	"	mov %r10, fs_seen+80(%rip)\n"
	"	mov %r11, fs_seen+88(%rip)\n"
	"	mov %r12, fs_seen+96(%rip)\n"
	"	mov %r13, fs_seen+104(%rip)\n"
	"	mov %r14, fs_seen+112(%rip)\n"
	"	mov %r15, fs_seen+120(%rip)\n"
	"	mov fs_saved_rsp(%rip), %rsp\n"
	"	pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
	"	ret\n");

static void die(const char *what)
{
	fprintf(stderr, "harness: %s\n", what);
	exit(2);
}

static void expect(const char *word)
{
	char got[32];
	if (scanf("%31s", got) != 1 || strcmp(got, word) != 0) {
		fprintf(stderr, "harness: want %s, got %s\n", word, got);
		exit(2);
	}
}

/* mapregion maps the pages holding [addr, addr+len) read-write. */
static unsigned char *mapregion(unsigned long addr, unsigned long len)
{
	unsigned long lo = addr & ~4095UL, hi = (addr + len + 4095) & ~4095UL;
	void *p = mmap((void *)lo, hi - lo, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED || p != (void *)lo)
		die("mmap at the requested address failed");
	memset(p, 0xcc, hi - lo);
	return (unsigned char *)addr;
}

static void protect(unsigned long addr, unsigned long len, int prot)
{
	unsigned long lo = addr & ~4095UL, hi = (addr + len + 4095) & ~4095UL;
	if (mprotect((void *)lo, hi - lo, prot) != 0)
		die("mprotect");
}

static void readhex(unsigned char *p, unsigned long len)
{
	for (unsigned long i = 0; i < len; i++)
		if (scanf("%2hhx", &p[i]) != 1)
			die("short hex blob");
}

static void printhex(const char *name, const unsigned char *p, unsigned long len)
{
	printf("%s ", name);
	for (unsigned long i = 0; i < len; i++)
		printf("%02x", p[i]);
	printf("\n");
}

int main(void)
{
	unsigned long code, codelen, target, scr, scrlen, stk, stklen;

	expect("code");
	if (scanf("%lx %lx", &code, &codelen) != 2)
		die("code");
	readhex(mapregion(code, codelen), codelen);
	protect(code, codelen, PROT_READ | PROT_EXEC);

	expect("target");
	if (scanf("%lx", &target) != 1)
		die("target");
	unsigned char *t = mapregion(target, 14);
	unsigned long to = (unsigned long)&fs_target;
	t[0] = 0xff, t[1] = 0x25;
	memset(t + 2, 0, 4);
	memcpy(t + 6, &to, 8);
	protect(target, 14, PROT_READ | PROT_EXEC);

	expect("scratch");
	if (scanf("%lx %lx", &scr, &scrlen) != 2)
		die("scratch");
	readhex(mapregion(scr, scrlen), scrlen);

	expect("stack");
	if (scanf("%lx %lx", &stk, &stklen) != 2)
		die("stack");
	readhex(mapregion(stk, stklen), stklen);

	expect("enter");
	if (scanf("%lx", &fs_enter_rsp) != 1)
		die("enter");
	expect("regs");
	for (int i = 0; i < 16; i++)
		if (scanf("%lx", &fs_init[i]) != 1)
			die("regs");

	fs_stub = code;
	fs_enter();

	printf("regs");
	for (int i = 0; i < 16; i++)
		printf(" %lx", fs_seen[i]);
	printf("\n");
	printhex("stack", (unsigned char *)stk, stklen);
	printhex("scratch", (unsigned char *)scr, scrlen);
	return 0;
}
