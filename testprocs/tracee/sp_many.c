/* sp_many: argv[1] threads (default 8, counting main) each blocked in
 * nanosleep a few calls deep, for benchmarking stack unwinding without
 * burning CPU. Prints "ready". Built: gcc -g -O2 sp_many.c -lpthread */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static volatile long sink;

NOINLINE static void nap(void)
{
	struct timespec ts = {3600, 0};
	while (nanosleep(&ts, NULL) == 0)
		;
	sink++;
}

NOINLINE static void work(int depth)
{
	if (depth > 0)
		work(depth - 1);
	else
		nap();
	sink += depth;
}

static void *thread(void *arg)
{
	work(3);
	return arg;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 8;
	for (int i = 1; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	usleep(100000);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
