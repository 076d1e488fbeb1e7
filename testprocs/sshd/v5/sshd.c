/*
 * graftsshd: a small sshd-like login server.
 *
 * It speaks its own line protocol over TCP on 127.0.0.1 (no crypto): a
 * version banner on connect, then one command per line, one reply line per
 * command ("OK ...", "FAIL ...", "ERR ...", "BYE ...").
 *
 *   LOGIN user password    authenticate against the user file
 *   VERSION                the server version (same string as the banner)
 *   WHOAMI                 the logged-in user
 *   ECHO text              text back
 *   SESSIONS               number of open sessions and id:user of each
 *   UPTIME                 seconds since start (kept by the housekeeper)
 *   STATS                  server counters
 *   LOGOUT, QUIT           close the session
 *
 * Threads: the main thread accepts and starts one detached thread per
 * connection; a housekeeping thread updates the counters every
 * HOUSEKEEP_MS and expires idle sessions. Sessions live in a global table
 * (sessions[]) protected by sessions_lock, which also guards stats.
 *
 * Usage: sshd PORT [-u USERFILE] [-t IDLE_SECONDS]
 * The user file holds "user:password" lines; without one, a built-in list
 * is used. Logs go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define SSHD_VERSION	"SSH-2.0-graftssh_1.1"
#define MAX_SESSIONS	64
#define MAX_USERS	32
#define LINE_LEN	512
#define NAME_LEN	32
#define PASS_LEN	64
#define HOUSEKEEP_MS	100
#define DEFAULT_IDLE	300

/* Keep per-connection steps out of the session loop, so that profiles and
 * backtraces show them by name. */
#define NOINLINE	__attribute__((noinline))

struct user {
	char name[NAME_LEN];
	char pass[PASS_LEN];
};

struct session {
	int in_use;
	int fd;
	int authed;
	int expired;
	unsigned id;
	char user[NAME_LEN];
	char peer[48];
	time_t started;
	time_t last_active;
};

struct server_stats {
	unsigned long connections;
	unsigned long logins;
	unsigned long commands;
	unsigned long expired;
	unsigned long ticks;
	unsigned long uptime_ms;
};

/* A command handler returns 0 to keep the session, 1 to close it. */
struct command {
	const char *name;
	int (*handler)(struct session *s, const char *arg);
	int needs_auth;
};

static const struct user default_users[] = {
	{ "alice", "secret" },
	{ "bob", "hunter2" },
	{ "root", "toor" },
};

static struct user users[MAX_USERS];
static int nusers;

static struct session sessions[MAX_SESSIONS];
static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static struct server_stats stats;
static unsigned next_session_id = 1;
static int idle_timeout = DEFAULT_IDLE;
static unsigned long failed_logins;

static const char msg_not_logged_in[] = "ERR not logged in";
static const char msg_unknown[] = "ERR unknown command";
static const char msg_login_failed[] = "FAIL login incorrect";

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void log_msg(const char *fmt, ...)
{
	char buf[LINE_LEN + 128];
	struct timespec ts;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "sshd[%d] %ld.%03ld %s\n", (int)getpid(), (long)ts.tv_sec,
		ts.tv_nsec / 1000000, buf);
}

static void reply(struct session *s, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	size_t len, off = 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	len = (size_t)n < sizeof buf - 2 ? (size_t)n : sizeof buf - 2;
	buf[len++] = '\n';
	while (off < len) {
		ssize_t w = send(s->fd, buf + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* read_line reads one line (without its end) from fd. It returns the
 * length, or -1 on EOF or error. Overlong lines are cut. */
static ssize_t read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;

	for (;;) {
		char c;
		ssize_t n = read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		if (c == '\n')
			break;
		if (c == '\r')
			continue;
		if (len + 1 < size)
			buf[len++] = c;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

static const struct user *find_user(const char *name)
{
	for (int i = 0; i < nusers; i++)
		if (strcmp(users[i].name, name) == 0)
			return &users[i];
	return NULL;
}

static int check_password(const struct user *u, const char *pass)
{
	return strcmp(u->pass, pass) == 0;
}

static int cmd_login(struct session *s, const char *arg)
{
	char name[NAME_LEN];
	const char *pass;
	const struct user *u;
	size_t nlen;

	if (s->authed) {
		reply(s, "FAIL already logged in as %s", s->user);
		return 0;
	}
	pass = strchr(arg, ' ');
	nlen = pass ? (size_t)(pass - arg) : strlen(arg);
	if (nlen == 0 || nlen >= sizeof name) {
		reply(s, "ERR usage: LOGIN user password");
		return 0;
	}
	memcpy(name, arg, nlen);
	name[nlen] = '\0';
	pass = pass ? pass + 1 : "";

	u = find_user(name);
	if (u == NULL || !check_password(u, pass)) {
		pthread_mutex_lock(&sessions_lock);
		failed_logins++;
		pthread_mutex_unlock(&sessions_lock);
		log_msg("session %u: failed login for %s from %s", s->id, name, s->peer);
		reply(s, "%s", msg_login_failed);
		return 0;
	}
	pthread_mutex_lock(&sessions_lock);
	snprintf(s->user, sizeof s->user, "%s", u->name);
	s->authed = 1;
	stats.logins++;
	pthread_mutex_unlock(&sessions_lock);
	log_msg("session %u: %s logged in from %s", s->id, s->user, s->peer);
	reply(s, "OK welcome %s", s->user);
	return 0;
}

static int cmd_version(struct session *s, const char *arg)
{
	reply(s, "OK %s", SSHD_VERSION);
	return 0;
}

static int cmd_whoami(struct session *s, const char *arg)
{
	reply(s, "OK %s", s->user);
	return 0;
}

static int cmd_echo(struct session *s, const char *arg)
{
	reply(s, "OK %s", arg);
	return 0;
}

static int cmd_sessions(struct session *s, const char *arg)
{
	char buf[MAX_SESSIONS * (NAME_LEN + 16)];
	size_t off = 0;
	int count = 0;

	pthread_mutex_lock(&sessions_lock);
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *t = &sessions[i];
		if (!t->in_use)
			continue;
		count++;
		off += (size_t)snprintf(buf + off, sizeof buf - off, " %u:%s", t->id,
					t->authed ? t->user : "-");
		if (off >= sizeof buf)
			off = sizeof buf - 1;
	}
	pthread_mutex_unlock(&sessions_lock);
	buf[off] = '\0';
	reply(s, "OK %d%s", count, buf);
	return 0;
}

static int cmd_uptime(struct session *s, const char *arg)
{
	unsigned long ms;

	pthread_mutex_lock(&sessions_lock);
	ms = stats.uptime_ms;
	pthread_mutex_unlock(&sessions_lock);
	reply(s, "OK %lu s", ms / 1000);
	return 0;
}

static int cmd_stats(struct session *s, const char *arg)
{
	struct server_stats st;
	unsigned long failed;

	pthread_mutex_lock(&sessions_lock);
	st = stats;
	failed = failed_logins;
	pthread_mutex_unlock(&sessions_lock);
	reply(s, "OK connections=%lu logins=%lu commands=%lu expired=%lu ticks=%lu failed=%lu",
	      st.connections, st.logins, st.commands, st.expired, st.ticks, failed);
	return 0;
}

static int cmd_logout(struct session *s, const char *arg)
{
	reply(s, "OK bye");
	return 1;
}

static const struct command commands[] = {
	{ "LOGIN", cmd_login, 0 },
	{ "VERSION", cmd_version, 0 },
	{ "WHOAMI", cmd_whoami, 1 },
	{ "ECHO", cmd_echo, 1 },
	{ "SESSIONS", cmd_sessions, 1 },
	{ "UPTIME", cmd_uptime, 1 },
	{ "STATS", cmd_stats, 1 },
	{ "LOGOUT", cmd_logout, 1 },
	{ "QUIT", cmd_logout, 0 },
};

static int dispatch(struct session *s, char *line)
{
	char *arg = strchr(line, ' ');

	if (arg)
		*arg++ = '\0';
	else
		arg = line + strlen(line);
	pthread_mutex_lock(&sessions_lock);
	stats.commands++;
	pthread_mutex_unlock(&sessions_lock);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		const struct command *c = &commands[i];
		if (strcasecmp(c->name, line) != 0)
			continue;
		if (c->needs_auth && !s->authed) {
			reply(s, "%s", msg_not_logged_in);
			return 0;
		}
		return c->handler(s, arg);
	}
	reply(s, "%s", msg_unknown);
	return 0;
}

static NOINLINE void send_banner(struct session *s)
{
	reply(s, "%s", SSHD_VERSION);
}

static void *session_thread(void *arg)
{
	struct session *s = arg;
	char line[LINE_LEN];

	send_banner(s);
	while (read_line(s->fd, line, sizeof line) >= 0) {
		pthread_mutex_lock(&sessions_lock);
		s->last_active = time(NULL);
		pthread_mutex_unlock(&sessions_lock);
		if (dispatch(s, line))
			break;
	}
	log_msg("session %u: closed (%s)", s->id, s->authed ? s->user : "-");
	pthread_mutex_lock(&sessions_lock);
	close(s->fd);
	memset(s, 0, sizeof *s);
	pthread_mutex_unlock(&sessions_lock);
	return NULL;
}

static void *housekeeping_thread(void *arg)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct timespec pause = { 0, HOUSEKEEP_MS * 1000000L };
		time_t wall;

		nanosleep(&pause, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
		wall = time(NULL);
		pthread_mutex_lock(&sessions_lock);
		stats.ticks++;
		stats.uptime_ms = (unsigned long)(now.tv_sec - start.tv_sec) * 1000 +
				  (unsigned long)((now.tv_nsec - start.tv_nsec) / 1000000);
		for (int i = 0; i < MAX_SESSIONS; i++) {
			struct session *s = &sessions[i];
			if (!s->in_use || s->expired || wall - s->last_active < idle_timeout)
				continue;
			s->expired = 1;
			stats.expired++;
			log_msg("session %u: idle for %lds, expiring", s->id,
				(long)(wall - s->last_active));
			reply(s, "BYE idle timeout");
			shutdown(s->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&sessions_lock);
	}
	return arg;
}

static int load_users(const char *path)
{
	char line[NAME_LEN + PASS_LEN + 8];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		log_msg("open %s: %s", path, strerror(errno));
		return -1;
	}
	nusers = 0;
	while (fgets(line, sizeof line, f) && nusers < MAX_USERS) {
		char *colon = strchr(line, ':');
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || colon == NULL)
			continue;
		*colon = '\0';
		snprintf(users[nusers].name, NAME_LEN, "%.*s", NAME_LEN - 1, line);
		snprintf(users[nusers].pass, PASS_LEN, "%.*s", PASS_LEN - 1, colon + 1);
		nusers++;
	}
	fclose(f);
	return 0;
}

static int listen_on(int port)
{
	struct sockaddr_in sa;
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static struct session *session_new(int fd, const struct sockaddr_in *peer)
{
	struct session *s = NULL;
	char addr[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &peer->sin_addr, addr, sizeof addr);
	pthread_mutex_lock(&sessions_lock);
	stats.connections++;
	for (int i = 0; i < MAX_SESSIONS; i++) {
		if (!sessions[i].in_use) {
			s = &sessions[i];
			break;
		}
	}
	if (s) {
		memset(s, 0, sizeof *s);
		s->in_use = 1;
		s->fd = fd;
		s->id = next_session_id++;
		s->started = s->last_active = time(NULL);
		snprintf(s->peer, sizeof s->peer, "%s:%u", addr, ntohs(peer->sin_port));
	}
	pthread_mutex_unlock(&sessions_lock);
	return s;
}

int main(int argc, char **argv)
{
	const char *userfile = NULL;
	pthread_attr_t attr;
	pthread_t tid;
	int port, lfd, opt;

	if (argc < 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
		fprintf(stderr, "usage: %s PORT [-u USERFILE] [-t IDLE_SECONDS]\n", argv[0]);
		return 2;
	}
	while ((opt = getopt(argc - 1, argv + 1, "u:t:")) != -1) {
		switch (opt) {
		case 'u':
			userfile = optarg;
			break;
		case 't':
			idle_timeout = atoi(optarg);
			if (idle_timeout <= 0)
				idle_timeout = DEFAULT_IDLE;
			break;
		default:
			return 2;
		}
	}
	if (userfile) {
		if (load_users(userfile) < 0)
			return 1;
	} else {
		nusers = (int)(sizeof default_users / sizeof default_users[0]);
		memcpy(users, default_users, sizeof default_users);
	}
	signal(SIGPIPE, SIG_IGN);

	lfd = listen_on(port);
	if (lfd < 0) {
		log_msg("listen on 127.0.0.1:%d: %s", port, strerror(errno));
		return 1;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&tid, &attr, housekeeping_thread, NULL) != 0) {
		log_msg("start housekeeping thread failed");
		return 1;
	}
	log_msg("listening on 127.0.0.1:%d, %d users, idle timeout %ds", port, nusers,
		idle_timeout);

	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof peer;
		struct session *s;
		int fd = accept(lfd, (struct sockaddr *)&peer, &plen);

		if (fd < 0) {
			if (errno != EINTR)
				log_msg("accept: %s", strerror(errno));
			continue;
		}
		s = session_new(fd, &peer);
		if (s == NULL) {
			static const char full[] = "FAIL too many sessions\n";
			send(fd, full, sizeof full - 1, MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		log_msg("session %u: connect from %s", s->id, s->peer);
		if (pthread_create(&tid, &attr, session_thread, s) != 0) {
			log_msg("session %u: no thread: %s", s->id, strerror(errno));
			pthread_mutex_lock(&sessions_lock);
			close(fd);
			memset(s, 0, sizeof *s);
			pthread_mutex_unlock(&sessions_lock);
		}
	}
}
