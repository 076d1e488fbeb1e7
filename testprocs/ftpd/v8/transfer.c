/*
 * graftftpd: passive mode and the commands that use a data connection.
 * Only passive mode exists: PASV or EPSV opens a listening socket on the
 * control connection's local address, the next transfer accepts one
 * connection on it and closes it.
 */
#define _GNU_SOURCE /* accept4 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ftpd.h"

unsigned long ftpd_files_sent;

static void pasv_close(struct ftp_session *s)
{
	if (s->pasv_fd >= 0) {
		close(s->pasv_fd);
		s->pasv_fd = -1;
	}
}

/* Listen on the control connection's local address; returns the port or -1. */
static int pasv_listen(struct ftp_session *s, struct sockaddr_in *addr)
{
	socklen_t len = sizeof *addr;
	int fd;

	pasv_close(s);
	if (getsockname(s->ctrl_fd, (struct sockaddr *)addr, &len) < 0)
		return -1;
	addr->sin_port = 0;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	len = sizeof *addr;
	if (bind(fd, (struct sockaddr *)addr, len) < 0 || listen(fd, 1) < 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		close(fd);
		return -1;
	}
	s->pasv_fd = fd;
	return ntohs(addr->sin_port);
}

void cmd_pasv(struct ftp_session *s, char *arg)
{
	struct sockaddr_in addr;
	unsigned char *ip = (unsigned char *)&addr.sin_addr.s_addr;
	int port = pasv_listen(s, &addr);

	if (port < 0) {
		reply(s, 425, "Cannot open passive connection.");
		return;
	}
	reply(s, 227, "Entering Passive Mode (%u,%u,%u,%u,%d,%d).",
	      ip[0], ip[1], ip[2], ip[3], port >> 8, port & 0xff);
}

void cmd_epsv(struct ftp_session *s, char *arg)
{
	struct sockaddr_in addr;
	int port;

	if (strcasecmp(arg, "ALL") == 0) {
		reply(s, 200, "EPSV ALL ok.");
		return;
	}
	if (arg[0] != '\0' && strcmp(arg, "1") != 0) {
		reply(s, 522, "Bad network protocol, use (1).");
		return;
	}
	port = pasv_listen(s, &addr);
	if (port < 0) {
		reply(s, 425, "Cannot open passive connection.");
		return;
	}
	reply(s, 229, "Entering Extended Passive Mode (|||%d|).", port);
}

/*
 * Accept the client's data connection on the passive socket and announce
 * the transfer of what. Returns the connected socket, or -1 after a reply.
 */
static int data_start(struct ftp_session *s, const char *what)
{
	struct pollfd p;
	int fd, rc;

	if (s->pasv_fd < 0) {
		reply(s, 425, "Use PORT or PASV first.");
		return -1;
	}
	p.fd = s->pasv_fd;
	p.events = POLLIN;
	do
		rc = poll(&p, 1, FTPD_DATA_TIMEOUT);
	while (rc < 0 && errno == EINTR);
	fd = rc > 0 ? accept4(s->pasv_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
	pasv_close(s);
	if (fd < 0) {
		reply(s, 425, "Failed to establish connection.");
		return -1;
	}
	reply(s, 150, "Opening %s mode data connection for %s.",
	      s->binary ? "BINARY" : "ASCII", what);
	return fd;
}

/* Copy in to out until EOF. -1: read failed, -2: write failed. */
static int copy_fd(int in, int out)
{
	char buf[8192];

	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		if (write_all(out, buf, (size_t)n) < 0)
			return -2;
	}
}

static void format_entry(char *buf, size_t size, const char *name,
			 const struct stat *st, int verbose)
{
	char mode[11], date[16];
	struct tm tm;
	time_t now = time(NULL);

	if (!verbose) {
		snprintf(buf, size, "%s\r\n", name);
		return;
	}
	mode[0] = S_ISDIR(st->st_mode) ? 'd' : S_ISLNK(st->st_mode) ? 'l' : '-';
	mode[1] = (st->st_mode & S_IRUSR) ? 'r' : '-';
	mode[2] = (st->st_mode & S_IWUSR) ? 'w' : '-';
	mode[3] = (st->st_mode & S_IXUSR) ? 'x' : '-';
	mode[4] = (st->st_mode & S_IRGRP) ? 'r' : '-';
	mode[5] = (st->st_mode & S_IWGRP) ? 'w' : '-';
	mode[6] = (st->st_mode & S_IXGRP) ? 'x' : '-';
	mode[7] = (st->st_mode & S_IROTH) ? 'r' : '-';
	mode[8] = (st->st_mode & S_IWOTH) ? 'w' : '-';
	mode[9] = (st->st_mode & S_IXOTH) ? 'x' : '-';
	mode[10] = '\0';
	gmtime_r(&st->st_mtime, &tm);
	/* like ls: the year instead of the time for entries older than ~6 months */
	if (now - st->st_mtime > 182L * 24 * 3600 || st->st_mtime > now)
		strftime(date, sizeof date, "%b %d  %Y", &tm);
	else
		strftime(date, sizeof date, "%b %d %H:%M", &tm);
	snprintf(buf, size, "%s %4lu %-8u %-8u %8lld %s %s\r\n", mode,
		 (unsigned long)st->st_nlink, (unsigned)st->st_uid, (unsigned)st->st_gid,
		 (long long)st->st_size, date, name);
}

static int visible_entry(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static void send_listing(struct ftp_session *s, char *arg, int verbose)
{
	char vpath[FTPD_PATH_MAX], real[PATH_MAX], path[PATH_MAX + 256];
	char line[PATH_MAX + 128];
	struct dirent **names = NULL;
	struct stat st;
	int fd, i, n = 0, failed = 0;

	/* clients send ls options ("LIST -la"): ignore them */
	while (arg[0] == '-') {
		while (*arg != '\0' && *arg != ' ')
			arg++;
		while (*arg == ' ')
			arg++;
	}
	if (vpath_resolve(s, arg, vpath, sizeof vpath, real, sizeof real) < 0 ||
	    stat(real, &st) < 0)
		st.st_mode = 0;
	fd = data_start(s, "directory listing");
	if (fd < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		n = scandir(real, &names, visible_entry, alphasort);
		for (i = 0; i < n; i++) {
			struct stat est;

			snprintf(path, sizeof path, "%s/%s", real, names[i]->d_name);
			if (!failed && lstat(path, &est) == 0) {
				format_entry(line, sizeof line, names[i]->d_name, &est, verbose);
				if (write_all(fd, line, strlen(line)) < 0)
					failed = 1;
			}
			free(names[i]);
		}
		free(names);
	} else if (S_ISREG(st.st_mode)) {
		const char *base = strrchr(vpath, '/') + 1;

		format_entry(line, sizeof line, verbose ? base : arg, &st, verbose);
		failed = write_all(fd, line, strlen(line)) < 0;
	}
	close(fd);
	if (failed)
		reply(s, 426, "Failure writing network stream.");
	else
		reply(s, 226, "Directory send OK.");
}

void cmd_list(struct ftp_session *s, char *arg)
{
	send_listing(s, arg, 1);
}

void cmd_nlst(struct ftp_session *s, char *arg)
{
	send_listing(s, arg, 0);
}

void cmd_retr(struct ftp_session *s, char *arg)
{
	char vpath[FTPD_PATH_MAX], real[PATH_MAX];
	struct stat st;
	int ffd = -1, dfd, rc;

	if (vpath_resolve(s, arg, vpath, sizeof vpath, real, sizeof real) == 0)
		ffd = open(real, O_RDONLY | O_CLOEXEC);
	if (ffd < 0 || fstat(ffd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (ffd >= 0)
			close(ffd);
		reply(s, 550, "Failed to open file.");
		return;
	}
	dfd = data_start(s, arg);
	if (dfd < 0) {
		close(ffd);
		return;
	}
	rc = copy_fd(ffd, dfd);
	close(ffd);
	close(dfd);
	if (rc == -1)
		reply(s, 451, "Failure reading local file.");
	else if (rc < 0)
		reply(s, 426, "Failure writing network stream.");
	else {
		ftpd_files_sent++;
		reply(s, 226, "Transfer complete.");
	}
	log_msg("session for %s: RETR %s: %s", s->peer, vpath, rc == 0 ? "ok" : "failed");
}

void cmd_stor(struct ftp_session *s, char *arg)
{
	char vpath[FTPD_PATH_MAX], real[PATH_MAX];
	int ffd = -1, dfd, rc;

	if (vpath_resolve(s, arg, vpath, sizeof vpath, real, sizeof real) == 0)
		ffd = open(real, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (ffd < 0) {
		reply(s, 553, "Could not create file.");
		return;
	}
	dfd = data_start(s, arg);
	if (dfd < 0) {
		close(ffd);
		return;
	}
	rc = copy_fd(dfd, ffd);
	close(ffd);
	close(dfd);
	if (rc == -1)
		reply(s, 426, "Failure reading network stream.");
	else if (rc < 0)
		reply(s, 451, "Failure writing to local file.");
	else {
		ftpd_stats.files_received++;
		reply(s, 226, "Transfer complete.");
	}
	log_msg("session for %s: STOR %s: %s", s->peer, vpath, rc == 0 ? "ok" : "failed");
}
