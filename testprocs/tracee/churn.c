/* churn: argv[1] long-lived busy threads (default 2) while the main
 * thread keeps creating and joining short-lived threads, up to argv[2] at
 * a time (default 4), forever. A tracer that attaches, stops, resumes and
 * detaches meanwhile must miss none of them. Prints "ready".
 * Built: gcc -g -O2 churn.c -lpthread */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile unsigned long counter;

static void *busy(void *arg)
{
	for (;;)
		counter++;
	return arg;
}

static void *brief(void *arg)
{
	for (int i = 0; i < 1000; i++)
		counter++;
	return arg;
}

int main(int argc, char **argv)
{
	int nbusy = argc > 1 ? atoi(argv[1]) : 2;
	int nbrief = argc > 2 ? atoi(argv[2]) : 4;
	if (nbrief < 1 || nbrief > 64)
		nbrief = 4;
	for (int i = 0; i < nbusy; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, busy, NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	pthread_t ts[64];
	for (;;) {
		int n = 0;
		for (; n < nbrief; n++)
			if (pthread_create(&ts[n], NULL, brief, NULL) != 0)
				break;
		for (int i = 0; i < n; i++)
			pthread_join(ts[i], NULL);
	}
}
