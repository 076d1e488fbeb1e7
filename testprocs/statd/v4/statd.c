/* statd: a small line-protocol statistics server, a live-patch target
 * whose global statistics change layout between versions (VERSIONS.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_LEN 8

enum mode { MODE_IDLE, MODE_PAUSED, MODE_BUSY, MODE_CLOSING };

struct io {
	long in;
	long out;
	long dropped;
};

struct client;
typedef void (*handler_fn)(struct client *c, const char *arg);

struct statd_stats {
	long errors;
	long requests;
	int64_t delta;
	enum mode mode;
	long hist[HIST_LEN];
	struct io io;
	long started_ms; /* milliseconds since the epoch */
	handler_fn last;
};

struct client {
	int fd;
	long lines;
	char peer[16];
	struct client *next;
};

struct command {
	const char *name;
	handler_fn fn;
};

static long *last_counter;
static struct statd_stats stats;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct client *clients;

#define MODE_COUNT 4

static const char *mode_name(int m)
{
	switch (m) {
	case MODE_IDLE:
		return "idle";
	case MODE_PAUSED:
		return "paused";
	case MODE_BUSY:
		return "busy";
	case MODE_CLOSING:
		return "closing";
	}
	return "?";
}

static void reply(struct client *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	if (write(c->fd, buf, n) < 0)
		return;
}

static void cmd_req(struct client *c, const char *arg)
{
	long n = atol(arg);
	pthread_mutex_lock(&lock);
	stats.requests++;
	stats.hist[n < 0 ? 0 : n >= HIST_LEN ? HIST_LEN - 1 : n]++;
	stats.io.in += n;
	last_counter = &stats.requests;
	stats.last = cmd_req;
	pthread_mutex_unlock(&lock);
	reply(c, "OK");
}

static void cmd_err(struct client *c, const char *arg)
{
	pthread_mutex_lock(&lock);
	stats.errors++;
	last_counter = &stats.errors;
	stats.last = cmd_err;
	pthread_mutex_unlock(&lock);
	reply(c, "OK");
}

static void cmd_add(struct client *c, const char *arg)
{
	pthread_mutex_lock(&lock);
	stats.delta += atoi(arg);
	stats.last = cmd_add;
	pthread_mutex_unlock(&lock);
	reply(c, "OK");
}

static void cmd_bump(struct client *c, const char *arg)
{
	pthread_mutex_lock(&lock);
	if (last_counter)
		(*last_counter)++;
	pthread_mutex_unlock(&lock);
	reply(c, "OK");
}

static void cmd_mode(struct client *c, const char *arg)
{
	for (int i = 0; i < MODE_COUNT; i++) {
		if (strcmp(arg, mode_name(i)) == 0) {
			pthread_mutex_lock(&lock);
			stats.mode = (enum mode)i;
			stats.last = cmd_mode;
			pthread_mutex_unlock(&lock);
			reply(c, "OK");
			return;
		}
	}
	reply(c, "ERR no such mode");
}

static void cmd_stats(struct client *c, const char *arg);
static long now_ms(void);

static void cmd_quit(struct client *c, const char *arg)
{
	reply(c, "OK bye");
	shutdown(c->fd, SHUT_RDWR);
}

static const struct command commands[] = {
	{"REQ", cmd_req},   {"ERR", cmd_err},     {"ADD", cmd_add},
	{"BUMP", cmd_bump}, {"MODE", cmd_mode},   {"STATS", cmd_stats},
	{"QUIT", cmd_quit},
};

static const char *handler_name(handler_fn f)
{
	for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
		if (commands[i].fn == f)
			return commands[i].name;
	return "-";
}

static void cmd_stats(struct client *c, const char *arg)
{
	struct statd_stats s;
	const char *last;
	pthread_mutex_lock(&lock);
	s = stats;
	last = last_counter == &stats.requests ? "requests" : last_counter == &stats.errors ? "errors" : "-";
	pthread_mutex_unlock(&lock);
	reply(c, "OK requests=%ld errors=%ld delta=%ld mode=%s hist=%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld io=%ld/%ld/%ld uptime=%ldms last=%s counter=%s",
	      s.requests, s.errors, (long)s.delta, mode_name(s.mode), s.hist[0], s.hist[1], s.hist[2], s.hist[3],
	      s.hist[4], s.hist[5], s.hist[6], s.hist[7],
	      s.io.in, s.io.out, s.io.dropped, now_ms() - s.started_ms, handler_name(s.last), last);
}

/* handle_line runs one command; it is on a stack only while it does. */
static __attribute__((noinline)) void handle_line(struct client *c, char *line)
{
	char *arg = strchr(line, ' ');
	if (arg)
		*arg++ = '\0';
	else
		arg = line + strlen(line);
	for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
		if (strcasecmp(line, commands[i].name) == 0) {
			commands[i].fn(c, arg);
			return;
		}
	}
	reply(c, "ERR unknown command");
}

static void *client_thread(void *p)
{
	struct client *c = p;
	char buf[512];
	size_t have = 0;
	for (;;) {
		ssize_t n = read(c->fd, buf + have, sizeof buf - 1 - have);
		if (n <= 0)
			break;
		have += n;
		char *nl;
		while ((nl = memchr(buf, '\n', have)) != NULL) {
			*nl = '\0';
			if (nl > buf && nl[-1] == '\r')
				nl[-1] = '\0';
			c->lines++;
			if (!c->peer[0])
				snprintf(c->peer, sizeof c->peer, "fd%d", c->fd);
			handle_line(c, buf);
			have -= nl + 1 - buf;
			memmove(buf, nl + 1, have);
		}
		if (have == sizeof buf - 1)
			have = 0;
	}
	pthread_mutex_lock(&lock);
	for (struct client **pp = &clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	close(c->fd);
	free(c);
	return NULL;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static __attribute__((noinline)) void stats_init(void)
{
	stats.started_ms = now_ms();
	stats.mode = MODE_IDLE;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: statd PORT\n");
		return 2;
	}
	stats_init();
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 64) < 0) {
		perror("statd: listen");
		return 1;
	}
	fprintf(stderr, "statd: listening on 127.0.0.1:%s\n", argv[1]);
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			perror("statd: accept");
			return 1;
		}
		struct client *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		pthread_mutex_lock(&lock);
		c->next = clients;
		clients = c;
		pthread_mutex_unlock(&lock);
		pthread_t t;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &at, client_thread, c) != 0) {
			close(fd);
			free(c);
		}
		pthread_attr_destroy(&at);
	}
}
