// idlers: a target whose threads mostly wait, and one that keeps time.
//
// idlers [NREADERS]: NREADERS threads (default 1) block in read() on a pipe
// nobody writes (idle threads: each ptrace stop wakes them once and they
// sleep again, which /proc/PID/task/TID/status counts as voluntary context
// switches); a heartbeat thread takes a timestamp every ~100 us and keeps
// the longest gap between two; the main thread reads commands from stdin:
//
//   tids   prints "tids MAIN BEAT READER..." (thread IDs)
//   gap    prints "gap MAXGAP_US BEATS" and starts a new measurement
//   ver    prints answer(), the function the versions change
//
// Prints "ready" once every thread runs. v1 -> v2 -> v3 change answer().
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "v1"
#endif

static int idle_pipe[2];
static volatile int started;
static pid_t beat_tid;
static pid_t reader_tids[256];

static pthread_mutex_t gap_mu = PTHREAD_MUTEX_INITIALIZER;
static long max_gap_ns;
static long beats;

__attribute__((noinline)) const char *answer(void)
{
	static char buf[64];
	snprintf(buf, sizeof buf, "%s answer", VERSION);
	return buf;
}

static void *reader(void *arg)
{
	reader_tids[(long)arg] = (pid_t)syscall(SYS_gettid);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	char c;
	for (;;)
		if (read(idle_pipe[0], &c, 1) <= 0)
			return NULL;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *heartbeat(void *arg)
{
	beat_tid = (pid_t)syscall(SYS_gettid);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	struct timespec d = {0, 100 * 1000};
	long last = now_ns();
	for (;;) {
		clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);
		long t = now_ns();
		pthread_mutex_lock(&gap_mu);
		if (t - last > max_gap_ns)
			max_gap_ns = t - last;
		beats++;
		pthread_mutex_unlock(&gap_mu);
		last = t;
	}
	return arg;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	if (n < 0 || n > 256)
		n = 1;
	if (pipe(idle_pipe) != 0) {
		perror("pipe");
		return 1;
	}
	pthread_t t;
	for (long i = 0; i < n; i++)
		if (pthread_create(&t, NULL, reader, (void *)i) != 0) {
			perror("pthread_create");
			return 1;
		}
	if (pthread_create(&t, NULL, heartbeat, NULL) != 0) {
		perror("pthread_create");
		return 1;
	}
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n + 1)
		usleep(1000);
	printf("ready\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "tids", 4) == 0) {
			printf("tids %d %d", getpid(), beat_tid);
			for (int i = 0; i < n; i++)
				printf(" %d", reader_tids[i]);
			printf("\n");
		} else if (strncmp(line, "gap", 3) == 0) {
			pthread_mutex_lock(&gap_mu);
			printf("gap %ld %ld\n", max_gap_ns / 1000, beats);
			max_gap_ns = 0;
			beats = 0;
			pthread_mutex_unlock(&gap_mu);
		} else if (strncmp(line, "ver", 3) == 0) {
			printf("%s\n", answer());
		}
		fflush(stdout);
	}
	return 0;
}
