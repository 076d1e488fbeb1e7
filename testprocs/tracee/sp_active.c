/* sp_active: threads for safepoint's activeness tests.
 *
 *   - "forever": a thread that never leaves serve_forever() (it sleeps in
 *     a loop inside it), like an accept loop;
 *   - "entry": a thread spinning on the first bytes of entry_spin, a tiny
 *     assembly function whose loop is its own entry (pause; jmp entry), so
 *     its PC is always inside the bytes a trampoline would overwrite;
 *   - "hot": a worker that, on the command "hot MS" written to the FIFO
 *     argv[1], runs inside
 *     hot_loop() for MS milliseconds and then leaves it, printing
 *     "in hot" when it enters and "left hot" when it is back out.
 *
 * Prints "tid <role> <tid>" for each, then "ready".
 * Built: gcc -g -O2 sp_active.c -lpthread */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long hot_ms = -1; /* guarded by mu: >= 0 asks the worker to run hot */
static volatile unsigned long counter;
static volatile int never;

static void say(const char *fmt, long v)
{
	pthread_mutex_lock(&mu);
	printf(fmt, v);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&mu);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

NOINLINE void serve_forever(void)
{
	for (;;) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (never)
			break;
	}
}

static void *forever(void *arg)
{
	say("tid forever %ld", (long)syscall(SYS_gettid));
	serve_forever();
	return arg;
}

/* entry_spin: its loop is its first instruction, so the thread's PC never
 * leaves the first four bytes. CFI is that of any frameless function. */
__asm__(".text\n"
	".globl entry_spin\n"
	".type entry_spin, @function\n"
	"entry_spin:\n"
	".cfi_startproc\n"
	"	pause\n"
	"	jmp entry_spin\n"
	"	nop\n"
	"	nop\n"
	"	nop\n"
	"	nop\n"
	"	ret\n"
	".cfi_endproc\n"
	".size entry_spin, .-entry_spin\n");
void entry_spin(void);

NOINLINE static void call_entry_spin(void)
{
	entry_spin();
	counter++; /* not a tail call: keep this frame */
}

static void *entry(void *arg)
{
	say("tid entry %ld", (long)syscall(SYS_gettid));
	call_entry_spin();
	return arg;
}

NOINLINE void hot_loop(long ms)
{
	long end = now_ms() + ms;
	while (now_ms() < end)
		counter++;
}

static void *worker(void *arg)
{
	say("tid hot %ld", (long)syscall(SYS_gettid));
	for (;;) {
		pthread_mutex_lock(&mu);
		while (hot_ms < 0)
			pthread_cond_wait(&cv, &mu);
		long ms = hot_ms;
		hot_ms = -1;
		pthread_mutex_unlock(&mu);
		say("in hot %ld", ms);
		hot_loop(ms);
		say("left hot %ld", ms);
	}
	return arg;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: sp_active FIFO\n");
		return 2;
	}
	/* O_RDWR: open does not wait for a writer, and reads never see EOF. */
	FILE *cmds = fopen(argv[1], "r+");
	if (!cmds) {
		perror("open fifo");
		return 1;
	}
	void *(*fns[])(void *) = {forever, entry, worker};
	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, fns[i], NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	usleep(100000);
	say("ready", 0);
	char line[64];
	while (fgets(line, sizeof line, cmds)) {
		long ms;
		if (sscanf(line, "hot %ld", &ms) == 1) {
			pthread_mutex_lock(&mu);
			hot_ms = ms;
			pthread_cond_signal(&cv);
			pthread_mutex_unlock(&mu);
		}
	}
	return 0;
}
