/* killvictim: a target for killing graft in the middle of remote
 * syscalls. One thread blocks in read() on the FIFO argv[1] and prints
 * "read: <data>" for what it gets; one thread spins, counting, with a
 * pattern held in ymm15/xmm15 across its whole hot loop (checked every
 * iteration, so a clobbered FPU/SSE/AVX state is seen); the main thread
 * prints "count <n>" every 20 ms. Any surprise (EINTR, a changed vector
 * register) prints "error ..." and exits 3. Prints "tid read <tid>",
 * "tid busy <tid>", "avx <0|1>", then "ready".
 * Built: gcc -g -O2 killvictim.c -lpthread */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *fifo;
static volatile unsigned long counter;
static int started;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_mu);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
}

static void *reader(void *arg)
{
	int fd = open(fifo, O_RDWR);
	if (fd < 0) {
		say("error open %s", strerror(errno));
		exit(3);
	}
	say("tid read %ld", (long)syscall(SYS_gettid));
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		char buf[256];
		ssize_t n = read(fd, buf, sizeof buf - 1);
		if (n < 0) {
			say("error read %s", strerror(errno));
			exit(3);
		}
		while (n > 0 && buf[n - 1] == '\n')
			n--;
		buf[n] = 0;
		say("read: %s", buf);
	}
	return arg;
}

/* The pattern lives only in the register: loaded once, compared with a
 * memory copy on every iteration, never reloaded. */
static const unsigned long long pattern[4] __attribute__((aligned(32))) = {
	0x0123456789abcdefULL, 0xfedcba9876543210ULL,
	0x5555aaaa3333ccccULL, 0x0f0f0f0ff0f0f0f0ULL,
};

__attribute__((target("avx2"))) static void spin_avx(void)
{
	__asm__ volatile("vmovdqa %0, %%ymm15" : : "m"(pattern) : "xmm15");
	for (;;) {
		int mask;
		__asm__ volatile("vpcmpeqq %1, %%ymm15, %%ymm14\n\t"
				 "vpmovmskb %%ymm14, %0"
				 : "=r"(mask)
				 : "m"(pattern)
				 : "xmm14");
		if (mask != -1) {
			say("error ymm15 changed (mask %#x) after %lu", (unsigned)mask, counter);
			exit(3);
		}
		counter++;
	}
}

static void spin_sse(void)
{
	__asm__ volatile("movdqa %0, %%xmm15" : : "m"(pattern) : "xmm15");
	for (;;) {
		int mask;
		__asm__ volatile("movdqa %%xmm15, %%xmm14\n\t"
				 "pcmpeqb %1, %%xmm14\n\t"
				 "pmovmskb %%xmm14, %0"
				 : "=r"(mask)
				 : "m"(pattern)
				 : "xmm14");
		if (mask != 0xffff) {
			say("error xmm15 changed (mask %#x) after %lu", (unsigned)mask, counter);
			exit(3);
		}
		counter++;
	}
}

static void *busy(void *arg)
{
	say("tid busy %ld", (long)syscall(SYS_gettid));
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	if (__builtin_cpu_supports("avx2"))
		spin_avx();
	else
		spin_sse();
	return arg;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: killvictim FIFO\n");
		return 2;
	}
	fifo = argv[1];
	__builtin_cpu_init();
	pthread_t t;
	if (pthread_create(&t, NULL, reader, NULL) || pthread_create(&t, NULL, busy, NULL)) {
		fprintf(stderr, "pthread_create failed\n");
		return 2;
	}
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < 2)
		usleep(1000);
	say("avx %d", __builtin_cpu_supports("avx2") ? 1 : 0);
	say("ready");
	for (;;) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) != 0) {
			if (errno != EINTR) {
				say("error nanosleep %s", strerror(errno));
				exit(3);
			}
		}
		say("count %lu", counter);
	}
}
