// blockread: a worker thread that spends its life blocked in read() inside
// handle(), a function the patches replace (graft tests: unwinding through
// patched code that is blocked in a system call).
//
// blockread FIFO: the worker reads lines from FIFO one byte at a time in
// handle() and answers each on stdout with "<version> <line>"; a second
// thread calls tick() every 10 ms. v1 -> v2 changes handle, v2 -> v3
// changes tick (so a patch stacks on v2 while the worker sits in v2's
// handle). Prints "ready" once both threads run.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fifo = -1;
static volatile unsigned long ticks;

__attribute__((noinline)) static int handle(void)
{
	char line[256];
	size_t n = 0;
	for (;;) {
		char c;
		ssize_t r = read(fifo, &c, 1);
		if (r <= 0)
			return -1;
		if (c == '\n')
			break;
		if (n < sizeof line - 1)
			line[n++] = c;
	}
	line[n] = 0;
	printf("v2 %s\n", line);
	fflush(stdout);
	return 0;
}

__attribute__((noinline)) static void tick(void)
{
	ticks += 2;
}

static void *worker(void *arg)
{
	while (handle() == 0)
		;
	return NULL;
}

static void *ticker(void *arg)
{
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (;;) {
		tick();
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: blockread FIFO\n");
		return 2;
	}
	fifo = open(argv[1], O_RDONLY);
	if (fifo < 0) {
		perror("open");
		return 1;
	}
	pthread_t w, t;
	pthread_create(&w, NULL, worker, NULL);
	pthread_create(&t, NULL, ticker, NULL);
	printf("ready\n");
	fflush(stdout);
	pthread_join(w, NULL);
	return 0;
}
