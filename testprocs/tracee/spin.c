/* spin: N busy threads (argv[1], default 1) plus main sleeping. Prints
 * "ready" once all threads run. Built: gcc -g -O2 spin.c -lpthread */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile unsigned long counter;
static int started; /* threads that have reached busy(), atomically */

static void *busy(void *arg)
{
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	for (;;)
		counter++;
	return arg;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, busy, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	/* "ready" means every thread runs busy(), not just was created. */
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n)
		usleep(1000);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
