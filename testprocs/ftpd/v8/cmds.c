/* graftftpd: handlers of the commands that need no data connection. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "ftpd.h"

static int is_anonymous(const char *user)
{
	return strcasecmp(user, "anonymous") == 0 || strcasecmp(user, "ftp") == 0;
}

/* Look user:pass up in the user file. */
static int local_login_ok(const char *user, const char *pass)
{
	char line[256];
	size_t ulen = strlen(user);
	int ok = 0;
	FILE *f;

	if (ftpd_config.user_file == NULL)
		return 0;
	f = fopen(ftpd_config.user_file, "re");
	if (f == NULL)
		return 0;
	while (!ok && fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, user, ulen) == 0 && line[ulen] == ':' &&
		    strcmp(line + ulen + 1, pass) == 0)
			ok = 1;
	}
	fclose(f);
	return ok;
}

void cmd_user(struct ftp_session *s, char *arg)
{
	if (s->logged_in) {
		reply(s, 530, "Can't change to another user.");
		return;
	}
	snprintf(s->user, sizeof s->user, "%s", arg);
	s->anonymous = is_anonymous(arg);
	reply(s, 331, "Please specify the password.");
}

void cmd_pass(struct ftp_session *s, char *arg)
{
	if (s->logged_in) {
		reply(s, 230, "Already logged in.");
		return;
	}
	if (s->user[0] == '\0') {
		reply(s, 503, "Login with USER first.");
		return;
	}
	if (s->anonymous || local_login_ok(s->user, arg)) {
		s->logged_in = 1;
		if (s->anonymous)
			snprintf(s->user, sizeof s->user, "ftp");
		log_msg("session for %s: %s logged in", s->peer, s->user);
		reply(s, 230, "Login successful.");
		return;
	}
	log_msg("session for %s: login as %s failed", s->peer, s->user);
	s->user[0] = '\0';
	reply(s, 530, "Login incorrect.");
}

void cmd_syst(struct ftp_session *s, char *arg)
{
	reply(s, 215, "UNIX Type: L8");
}

void cmd_pwd(struct ftp_session *s, char *arg)
{
	reply(s, 257, "\"%s\" is the current directory", s->cwd);
}

void cmd_cwd(struct ftp_session *s, char *arg)
{
	char vpath[FTPD_PATH_MAX], real[PATH_MAX];
	struct stat st;

	if (vpath_resolve(s, arg, vpath, sizeof vpath, real, sizeof real) < 0 ||
	    stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
		reply(s, 550, "Failed to change directory.");
		return;
	}
	memcpy(s->cwd, vpath, strlen(vpath) + 1);
	reply(s, 250, "Directory successfully changed.");
}

void cmd_cdup(struct ftp_session *s, char *arg)
{
	char up[] = "..";

	cmd_cwd(s, up);
}

void cmd_type(struct ftp_session *s, char *arg)
{
	int c = toupper((unsigned char)arg[0]);

	if (c == 'I' || (c == 'L' && strcmp(arg + 1, " 8") == 0)) {
		s->binary = 1;
		reply(s, 200, "Switching to Binary mode.");
	} else if (c == 'A' && (arg[1] == '\0' || strcasecmp(arg + 1, " N") == 0)) {
		s->binary = 0;
		reply(s, 200, "Switching to ASCII mode.");
	} else {
		reply(s, 500, "Unrecognised TYPE command.");
	}
}

void cmd_size(struct ftp_session *s, char *arg)
{
	char vpath[FTPD_PATH_MAX], real[PATH_MAX];
	struct stat st;

	if (vpath_resolve(s, arg, vpath, sizeof vpath, real, sizeof real) < 0 ||
	    stat(real, &st) < 0 || !S_ISREG(st.st_mode)) {
		reply(s, 550, "Could not get file size.");
		return;
	}
	reply(s, 213, "%lld", (long long)st.st_size);
}

void cmd_stat(struct ftp_session *s, char *arg)
{
	char buf[1024];

	snprintf(buf, sizeof buf,
		 "211-FTP server status:\r\n"
		 "     Connected to %s\r\n"
		 "     Logged in as %s\r\n"
		 "     TYPE: %s\r\n"
		 "     At session startup, client count was %lu\r\n"
		 "     Session number %lu since server start\r\n"
		 "     Files sent in this session: %lu\r\n"
		 "     Files received in this session: %lu\r\n"
		 "211 End of status\r\n",
		 s->peer, s->user, s->binary ? "BINARY" : "ASCII",
		 ftpd_stats.active, ftpd_stats.sessions, ftpd_files_sent,
		 ftpd_stats.files_received);
	reply_raw(s, buf);
}

void cmd_feat(struct ftp_session *s, char *arg)
{
	reply_raw(s, "211-Features:\r\n EPSV\r\n PASV\r\n SIZE\r\n UTF8\r\n211 End\r\n");
}

void cmd_opts(struct ftp_session *s, char *arg)
{
	if (strcasecmp(arg, "UTF8 ON") == 0)
		reply(s, 200, "Always in UTF8 mode.");
	else
		reply(s, 501, "Option not understood.");
}

void cmd_noop(struct ftp_session *s, char *arg)
{
	reply(s, 200, "NOOP ok.");
}

void cmd_quit(struct ftp_session *s, char *arg)
{
	reply(s, 221, "Goodbye.");
	session_exit(s, "QUIT");
}
