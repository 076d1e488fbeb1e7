/*
 * graftftpd: one session. Reads command lines from the control connection,
 * looks the verb up in ftp_cmds and runs its handler.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ftpd.h"

#define CMD_NOAUTH  0x1   /* allowed before login */
#define CMD_NEEDARG 0x2   /* refused without an argument */

struct ftp_cmd {
	const char *name;
	void (*handler)(struct ftp_session *s, char *arg);
	unsigned int flags;
};

static const struct ftp_cmd ftp_cmds[] = {
	{ "USER", cmd_user, CMD_NOAUTH | CMD_NEEDARG },
	{ "PASS", cmd_pass, CMD_NOAUTH },
	{ "QUIT", cmd_quit, CMD_NOAUTH },
	{ "FEAT", cmd_feat, CMD_NOAUTH },
	{ "OPTS", cmd_opts, CMD_NOAUTH | CMD_NEEDARG },
	{ "NOOP", cmd_noop, CMD_NOAUTH },
	{ "SYST", cmd_syst, 0 },
	{ "PWD",  cmd_pwd,  0 },
	{ "XPWD", cmd_pwd,  0 },
	{ "CWD",  cmd_cwd,  CMD_NEEDARG },
	{ "XCWD", cmd_cwd,  CMD_NEEDARG },
	{ "CDUP", cmd_cdup, 0 },
	{ "XCUP", cmd_cdup, 0 },
	{ "TYPE", cmd_type, CMD_NEEDARG },
	{ "SIZE", cmd_size, CMD_NEEDARG },
	{ "STAT", cmd_stat, 0 },
	{ "PASV", cmd_pasv, 0 },
	{ "EPSV", cmd_epsv, 0 },
	{ "LIST", cmd_list, 0 },
	{ "NLST", cmd_nlst, 0 },
	{ "RETR", cmd_retr, CMD_NEEDARG },
	{ "STOR", cmd_stor, CMD_NEEDARG },
};

void reply_raw(struct ftp_session *s, const char *text)
{
	if (write_all(s->ctrl_fd, text, strlen(text)) < 0)
		session_exit(s, "control connection lost");
}

void reply(struct ftp_session *s, int code, const char *fmt, ...)
{
	char buf[FTPD_CMD_MAX + 64];
	va_list ap;
	int n, m;

	n = snprintf(buf, sizeof buf, "%03d ", code);
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof buf - (size_t)n - 2, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof buf - 3)
		n = (int)sizeof buf - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	buf[n] = '\0';
	reply_raw(s, buf);
}

void session_exit(struct ftp_session *s, const char *why)
{
	if (s->pasv_fd >= 0)
		close(s->pasv_fd);
	close(s->ctrl_fd);
	log_msg("session for %s ended: %s", s->peer, why);
	_exit(0);
}

/*
 * Read one line (without its CR LF) into line. Returns 0 for a line, 1 for
 * a line longer than size (consumed and dropped), -1 at EOF or on error.
 */
static int ctrl_getline(struct ftp_session *s, char *line, size_t size)
{
	int toolong = 0;

	for (;;) {
		char *nl = memchr(s->rbuf, '\n', s->rlen);
		ssize_t n;

		if (nl != NULL) {
			size_t len = (size_t)(nl - s->rbuf);
			size_t used = len + 1;

			if (len > 0 && s->rbuf[len - 1] == '\r')
				len--;
			if (len >= size)
				toolong = 1;
			if (!toolong) {
				memcpy(line, s->rbuf, len);
				line[len] = '\0';
			}
			memmove(s->rbuf, s->rbuf + used, s->rlen - used);
			s->rlen -= used;
			return toolong;
		}
		if (s->rlen == sizeof s->rbuf) {
			/* no newline in a full buffer: drop it, find the end later */
			toolong = 1;
			s->rlen = 0;
		}
		/* the idle timer runs only while waiting for a command */
		alarm(FTPD_IDLE_TIMEOUT);
		n = read(s->ctrl_fd, s->rbuf + s->rlen, sizeof s->rbuf - s->rlen);
		alarm(0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		s->rlen += (size_t)n;
	}
}

static void dispatch(struct ftp_session *s, char *line)
{
	const struct ftp_cmd *c = NULL;
	char *arg;
	size_t i;

	arg = line;
	while (*arg != '\0' && *arg != ' ')
		arg++;
	if (*arg == ' ')
		*arg++ = '\0';
	for (i = 0; line[i] != '\0'; i++)
		line[i] = (char)toupper((unsigned char)line[i]);

	for (i = 0; i < sizeof ftp_cmds / sizeof ftp_cmds[0]; i++) {
		if (strcmp(ftp_cmds[i].name, line) == 0) {
			c = &ftp_cmds[i];
			break;
		}
	}
	if (c == NULL) {
		reply(s, 500, "Unknown command.");
		return;
	}
	if (!(c->flags & CMD_NOAUTH) && !s->logged_in) {
		reply(s, 530, "Please login with USER and PASS.");
		return;
	}
	if ((c->flags & CMD_NEEDARG) && *arg == '\0') {
		reply(s, 501, "Missing argument.");
		return;
	}
	c->handler(s, arg);
}

void session_main(int fd, const struct sockaddr_in *peer)
{
	struct ftp_session s;
	char line[FTPD_CMD_MAX];
	int rc;

	signal(SIGCHLD, SIG_DFL);
	memset(&s, 0, sizeof s);
	s.ctrl_fd = fd;
	s.pasv_fd = -1;
	strcpy(s.cwd, "/");
	inet_ntop(AF_INET, &peer->sin_addr, s.peer, sizeof s.peer);

	reply(&s, 220, "(graftftpd " FTPD_VERSION ")");
	for (;;) {
		rc = ctrl_getline(&s, line, sizeof line);
		if (rc < 0)
			session_exit(&s, "client closed the connection");
		if (rc > 0) {
			reply(&s, 500, "Command line too long.");
			continue;
		}
		dispatch(&s, line);
	}
}
