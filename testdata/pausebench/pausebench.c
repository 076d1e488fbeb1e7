/* pausebench: the target of graft's pause benchmark (bench_test.go).
 *
 * Built twice by the benchmark, with -DVERSION=1 and -DVERSION=2:
 *   gcc -g -O2 -DVERSION=N -o pausebench-vN pausebench.c -lpthread
 * The versions differ in the constant of each of the ten functions f0..f9,
 * so the diff changes exactly ten functions, nothing else.
 *
 * usage: pausebench NTHREADS. NTHREADS workers alternate a short busy loop
 * and a short sleep (running and blocked threads, as in a server); the main
 * thread calls f0..f9 every 10 ms, so the patched code is live. Prints
 * "ready" once every worker runs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION 1
#endif

static volatile unsigned long sink;
static volatile int started;

#define F(n)                                                    \
	__attribute__((noinline)) unsigned long f##n(unsigned long x) \
	{                                                       \
		unsigned long r = x;                            \
		for (int i = 0; i < (int)(x & 7) + 4; i++)      \
			r = r * 31 + (n * 100 + VERSION);       \
		return r;                                       \
	}
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9)

static unsigned long (*const table[])(unsigned long) = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9};

static void *worker(void *arg)
{
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		for (int i = 0; i < 2000; i++)
			sink++;
		usleep(1000);
	}
	return arg;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n)
		usleep(1000);
	printf("ready\n");
	fflush(stdout);
	for (unsigned long k = 0;; k++) {
		for (int i = 0; i < 10; i++)
			sink += table[i](k + i);
		usleep(10000);
	}
}
