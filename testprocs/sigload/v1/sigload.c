/*
 * sigload: a program that lives under a steady stream of queued real-time
 * signals (a server with timers or signal-driven I/O). It counts every
 * signal it receives, per signal number, and adds up the sival_int each
 * carried, so a test can check that every signal sent arrived exactly
 * once and with its own siginfo.
 *
 *   SIGRTMIN..SIGRTMIN+3  counted (SA_SIGINFO, SA_RESTART)
 *   SIGUSR1               prints "count N sum S answer A" on stdout
 *
 * Two worker threads call answer() (the function v2 changes) in a loop
 * with short sleeps; the main thread waits in pause().
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_long count;
static atomic_long sum;
static atomic_long last_answer;
static volatile sig_atomic_t report;
static volatile long calls; /* answer() has an effect: called every round */

__attribute__((noinline)) long answer(long x)
{
	calls++;
	return x + 1;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	atomic_fetch_add(&count, 1);
	atomic_fetch_add(&sum, (long)si->si_value.sival_int);
}

static void on_usr1(int sig)
{
	(void)sig;
	report = 1;
}

static void *worker(void *arg)
{
	long x = (long)arg;
	struct timespec ts = {0, 500000};
	for (;;) {
		atomic_store(&last_answer, answer(x));
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (int s = SIGRTMIN; s <= SIGRTMIN + 3; s++)
		sigaction(s, &sa, NULL);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	pthread_t t;
	for (long i = 0; i < 2; i++)
		pthread_create(&t, NULL, worker, (void *)(i * 10));
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;) {
		pause();
		if (report) {
			report = 0;
			printf("count %ld sum %ld answer %ld\n", atomic_load(&count),
			       atomic_load(&sum), atomic_load(&last_answer));
			fflush(stdout);
		}
	}
}
