/* blockers: one thread blocked in each of read (on the FIFO argv[1]),
 * accept (on a loopback TCP port), nanosleep, a raw futex wait and
 * pthread_cond_wait; the main thread counts SIGUSR1 in a handler and
 * prints "usr1 <count> from <sender pid>" (si_pid, which must survive
 * graft re-injecting the signal).
 *
 * Every thread reports an unexpected return (EINTR above all) on stdout,
 * so a test can assert that graft's remote syscalls and stops stay
 * invisible to the program. Prints "tid <role> <tid>", "port <n>", then
 * "ready". Built: gcc -g -O2 blockers.c -lpthread */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t usr1;
static volatile pid_t usr1_from; /* si_pid of the last SIGUSR1 */
static const char *fifo;
static int lfd;
static unsigned int futex_word;
static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_flag;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_mu);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
}

static int started;

static void hello(const char *role)
{
	say("tid %s %ld", role, (long)syscall(SYS_gettid));
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
}

static void *reader(void *arg)
{
	int fd = open(fifo, O_RDWR); /* O_RDWR: open does not wait for a writer */
	if (fd < 0) {
		say("error open %s", strerror(errno));
		return arg;
	}
	hello("read");
	for (;;) {
		char buf[256];
		ssize_t n = read(fd, buf, sizeof buf - 1);
		if (n < 0) {
			say("%s read", errno == EINTR ? "EINTR" : "error");
			continue;
		}
		while (n > 0 && buf[n - 1] == '\n')
			n--;
		buf[n] = 0;
		say("read: %s", buf);
	}
}

static void *acceptor(void *arg)
{
	hello("accept");
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0) {
			say("%s accept", errno == EINTR ? "EINTR" : "error");
			continue;
		}
		say("accepted");
		close(c);
	}
	return arg;
}

static void *sleeper(void *arg)
{
	hello("sleep");
	for (;;) {
		struct timespec ts = {3600, 0};
		if (nanosleep(&ts, NULL) != 0)
			say("%s nanosleep", errno == EINTR ? "EINTR" : "error");
	}
	return arg;
}

static void *futexer(void *arg)
{
	hello("futex");
	for (;;) {
		long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		if (r != 0)
			say("%s futex", errno == EINTR ? "EINTR" : "error");
		else
			say("woke futex");
	}
	return arg;
}

static void *conder(void *arg)
{
	hello("cond");
	pthread_mutex_lock(&cmu);
	for (;;) {
		pthread_cond_wait(&cond, &cmu);
		if (!cond_flag)
			say("spurious cond");
	}
	return arg;
}

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
	usr1++;
	usr1_from = si->si_pid;
	(void)sig;
	(void)ctx;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: blockers FIFO\n");
		return 2;
	}
	fifo = argv[1];

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_RESTART | SA_SIGINFO;
	sigaction(SIGUSR1, &sa, NULL);

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 8) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
		perror("listen");
		return 1;
	}

	/* Only main takes SIGUSR1, so the blocked threads never see a handler
	 * run (which would legitimately interrupt nanosleep). */
	sigset_t usr, old;
	sigemptyset(&usr);
	sigaddset(&usr, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr, &old);
	void *(*fns[])(void *) = {reader, acceptor, sleeper, futexer, conder};
	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, fns[i], NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	/* Wait until every thread has printed its tid; the test then waits
	 * for each to block. */
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < (int)(sizeof fns / sizeof fns[0]))
		usleep(1000);
	hello("main");
	say("port %d", ntohs(a.sin_port));
	say("ready");
	int seen = 0;
	for (;;) {
		sigsuspend(&old);
		/* sigsuspend must give back the mask it replaced. */
		sigset_t cur;
		pthread_sigmask(SIG_BLOCK, NULL, &cur);
		if (!sigismember(&cur, SIGUSR1))
			say("error: SIGUSR1 unblocked after sigsuspend");
		if (usr1 != seen) {
			seen = usr1;
			say("usr1 %d from %d", seen, (int)usr1_from);
		}
	}
}
