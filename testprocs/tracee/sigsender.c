/*
 * sigsender PID RATE: queues real-time signals to PID with sigqueue(3)
 * at RATE per second, SIGRTMIN..SIGRTMIN+3 in turn, the i-th carrying
 * sival_int i (from 1). A full queue (EAGAIN) is retried, so every
 * signal counted as sent was queued. On SIGTERM it stops sending,
 * prints "sent N sum S ..." on stdout and waits to be killed (exiting
 * would race the reader of its stdout).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: sigsender PID RATE\n");
		return 2;
	}
	pid_t pid = atoi(argv[1]);
	double rate = atof(argv[2]);
	signal(SIGTERM, on_term);
	long sent = 0, sum = 0, again = 0;
	double start = now();
	struct timespec nap = {0, 200000};
	printf("sending\n");
	fflush(stdout);
	while (!stop) {
		long due = (long)((now() - start) * rate);
		while (sent < due && !stop) {
			union sigval v = {.sival_int = (int)(sent + 1)};
			if (sigqueue(pid, SIGRTMIN + (int)(sent % 4), v) != 0) {
				if (errno == EAGAIN) {
					again++;
					nanosleep(&nap, NULL);
					continue;
				}
				perror("sigqueue");
				return 1;
			}
			sent++;
			sum += sent;
		}
		nanosleep(&nap, NULL);
	}
	printf("sent %ld sum %ld again %ld seconds %.3f\n", sent, sum, again, now() - start);
	fflush(stdout);
	for (;;)
		pause();
}
