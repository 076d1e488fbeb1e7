/*
 * graftftpd: the listener. It owns the listening socket, forks a session
 * process for every control connection and reaps them on SIGCHLD.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpd.h"

int listener_open(int port)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof addr;
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_msg("socket: %s", strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		log_msg("SO_REUSEADDR: %s", strerror(errno));
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) {
		log_msg("listen on 127.0.0.1:%d: %s", port, strerror(errno));
		close(fd);
		return -1;
	}
	if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
		port = ntohs(addr.sin_port);
	log_msg("listening on 127.0.0.1:%d", port);
	return fd;
}

static void reap_children(int sig)
{
	int saved = errno;

	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
		if (ftpd_stats.active > 0)
			ftpd_stats.active--;
	}
	errno = saved;
}

void listener_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = reap_children;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	/* a client that vanishes mid-reply must not kill its session */
	signal(SIGPIPE, SIG_IGN);
}

void accept_loop(int lfd)
{
	sigset_t chld, saved;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	for (;;) {
		struct sockaddr_in peer;
		socklen_t len = sizeof peer;
		char host[INET_ADDRSTRLEN];
		pid_t pid;
		int fd;

		fd = accept(lfd, (struct sockaddr *)&peer, &len);
		if (fd < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				log_msg("accept: %s", strerror(errno));
			continue;
		}
		if (ftpd_config.max_clients != 0 &&
		    ftpd_stats.active >= ftpd_config.max_clients) {
			const char *busy =
				"421 There are too many connected users, please try later.\r\n";

			write_all(fd, busy, strlen(busy));
			log_msg("refused a connection: %lu sessions active", ftpd_stats.active);
			close(fd);
			continue;
		}
		/*
		 * reap_children decrements active: hold SIGCHLD off while we
		 * count, and count before fork, as the child may exit before
		 * fork returns here.
		 */
		sigprocmask(SIG_BLOCK, &chld, &saved);
		ftpd_stats.sessions++;
		ftpd_stats.active++;
		pid = fork();
		if (pid < 0)
			ftpd_stats.active--;
		sigprocmask(SIG_SETMASK, &saved, NULL);
		if (pid < 0) {
			log_msg("fork: %s", strerror(errno));
			close(fd);
			continue;
		}
		if (pid == 0) {
			close(lfd);
			session_main(fd, &peer);
		}
		inet_ntop(AF_INET, &peer.sin_addr, host, sizeof host);
		log_msg("session %lu: pid %d for %s:%u", ftpd_stats.sessions, (int)pid,
			host, (unsigned)ntohs(peer.sin_port));
		close(fd);
	}
}
