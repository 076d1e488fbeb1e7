/* sp_stacks: threads in steady states for comparing graft's CFI unwinder
 * with gdb: blocked in accept, read, nanosleep, pthread_cond_wait, a signal
 * handler sleeping inside the handler (a __restore_rt frame), a recursion
 * blocked at its bottom, a frame-pointer function whose CFA is rbp-based
 * above frameless callees, and a busy thread spinning forever in a frameless
 * leaf called from a frameless function. Prints "ready" once every thread
 * is in place. Built: gcc -g -O2 sp_stacks.c -lpthread */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int ready_count;
static int pipefd[2];
static int lfd;
static volatile unsigned long spin_counter;
static volatile int never; /* never set: keeps loops from being provably infinite */
static volatile long sink;

static void arrived(void)
{
	pthread_mutex_lock(&mu);
	ready_count++;
	pthread_mutex_unlock(&mu);
}

NOINLINE static int block_accept(void)
{
	int c = accept(lfd, NULL, NULL);
	sink += c;
	return c;
}

static void *acceptor(void *arg)
{
	arrived();
	for (;;)
		if (block_accept() >= 0)
			break;
	return arg;
}

NOINLINE static long block_read(void)
{
	char b[16];
	long n = read(pipefd[0], b, sizeof b);
	sink += n;
	return n;
}

static void *reader(void *arg)
{
	arrived();
	while (block_read() <= 0 && !never)
		;
	return arg;
}

NOINLINE static int block_sleep(void)
{
	struct timespec ts = {3600, 0};
	int r = nanosleep(&ts, NULL);
	sink += r;
	return r;
}

static void *sleeper(void *arg)
{
	arrived();
	while (!never)
		block_sleep();
	return arg;
}

NOINLINE static void block_cond(void)
{
	pthread_mutex_lock(&mu);
	while (!never)
		pthread_cond_wait(&cond, &mu);
	pthread_mutex_unlock(&mu);
}

static void *conder(void *arg)
{
	arrived();
	block_cond();
	return arg;
}

/* Frameless leaf: no stack frame at all at -O2. */
NOINLINE static unsigned long spin_leaf(volatile unsigned long *p)
{
	while (!never)
		(*p)++;
	return *p;
}

/* Frameless caller: no frame pointer; only the call's alignment. */
NOINLINE static unsigned long spin_mid(volatile unsigned long *p)
{
	return spin_leaf(p) * 3 + 1;
}

static void *spinner(void *arg)
{
	arrived();
	sink += spin_mid(&spin_counter);
	return arg;
}

/* With a frame pointer, the CFA is rbp-based; nothing called from here
 * saves rbp, so the unwinder must carry it through those frames. */
__attribute__((noinline, noclone, optimize("no-omit-frame-pointer"))) static void fp_outer(void)
{
	volatile char buf[64];
	buf[0] = 1;
	block_read();
	sink += buf[0];
}

static void *fpthread(void *arg)
{
	arrived();
	while (!never)
		fp_outer();
	return arg;
}

NOINLINE static int recurse(int n);
static int (*volatile recurse_p)(int) = recurse;

NOINLINE static int recurse(int n)
{
	if (n == 0) {
		char b;
		return (int)read(pipefd[0], &b, 1) + block_sleep();
	}
	int r = recurse_p(n - 1);
	sink += r;
	return r * 3 + n;
}

static void *recurser(void *arg)
{
	arrived();
	sink += recurse(5);
	return arg;
}

NOINLINE static void in_handler(int sig)
{
	block_sleep();
	sink += sig;
}

static void on_usr2(int sig)
{
	in_handler(sig);
}

NOINLINE static void wait_for_signal(void)
{
	for (;;)
		pause();
}

static void *signalled(void *arg)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	arrived();
	raise(SIGUSR2);
	wait_for_signal();
	return arg;
}

int main(void)
{
	if (pipe(pipefd) != 0) {
		perror("pipe");
		return 1;
	}
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 8) != 0) {
		perror("listen");
		return 1;
	}
	/* Only the "signalled" thread takes SIGUSR2. */
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	void *(*fns[])(void *) = {acceptor, reader, sleeper, conder, spinner, recurser, signalled, fpthread};
	int n = sizeof fns / sizeof fns[0];
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, fns[i], NULL) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	for (;;) {
		pthread_mutex_lock(&mu);
		int c = ready_count;
		pthread_mutex_unlock(&mu);
		if (c == n)
			break;
		usleep(1000);
	}
	usleep(200000); /* let every thread reach its blocking call */
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
