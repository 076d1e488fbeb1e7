/* vforker: one thread vforks a child that sleeps argv[1] milliseconds
 * (default 1500) before it exits; until then the parent thread waits in
 * the kernel uninterruptibly (state D), where no ptrace stop can reach it.
 * Main sleeps. Prints "vfork <tid>", "ready", and "vforked" once the child
 * is gone. Built: gcc -g -O2 vforker.c -lpthread */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long ms = 1500;

static void *vforker(void *arg)
{
	printf("vfork %ld\n", (long)syscall(SYS_gettid));
	fflush(stdout);
	pid_t pid = vfork();
	if (pid == 0) {
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
		_exit(0);
	}
	printf("vforked\n");
	fflush(stdout);
	for (;;)
		pause();
	return arg;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		ms = atol(argv[1]);
	pthread_t t;
	if (pthread_create(&t, NULL, vforker, NULL) != 0) {
		perror("pthread_create");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
