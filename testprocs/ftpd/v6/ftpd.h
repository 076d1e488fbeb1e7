/*
 * graftftpd - a small FTP server in the style of vsftpd.
 *
 * A listener process accepts control connections on 127.0.0.1 and forks
 * one process per session (listener.c). A session reads commands, looks
 * them up in a dispatch table (session.c) and runs their handlers
 * (cmds.c for the control-only commands, transfer.c for the ones that open
 * a passive data connection). Paths are virtual: "/" is the served
 * directory, and path.c maps a virtual path onto the real one.
 */
#ifndef FTPD_H
#define FTPD_H

#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>

#define FTPD_VERSION "1.1"

#define FTPD_CMD_MAX      512     /* longest command line accepted */
#define FTPD_PATH_MAX     1024    /* longest virtual path */
#define FTPD_IDLE_TIMEOUT 300     /* seconds without a command */
#define FTPD_DATA_TIMEOUT 30000   /* ms to wait for a data connection */

struct ftpd_config {
	char root[PATH_MAX];          /* realpath of the served directory */
	const char *user_file;        /* "name:password" lines; NULL: anonymous only */
	unsigned int max_clients;     /* 0: unlimited */
	int port;
};

/*
 * Counters kept by the listener. A session process gets a copy at fork
 * time, so inside a session they describe the server as it was when the
 * session started.
 */
struct ftpd_stats {
	unsigned long sessions;       /* control connections accepted */
	unsigned long active;         /* session processes alive */
};

struct ftp_session {
	int ctrl_fd;
	int pasv_fd;                  /* passive listening socket, -1 if none */
	int logged_in;
	int anonymous;
	int binary;                   /* TYPE I (else TYPE A) */
	char user[64];
	char peer[INET_ADDRSTRLEN];
	char cwd[FTPD_PATH_MAX];      /* virtual, always absolute */
	size_t rlen;
	char rbuf[FTPD_CMD_MAX * 2];  /* unconsumed control input */
};

extern struct ftpd_config ftpd_config;
extern struct ftpd_stats ftpd_stats;
extern unsigned long ftpd_files_sent;   /* by this session (transfer.c) */

/* util.c */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int write_all(int fd, const void *buf, size_t len);

/* listener.c */
int listener_open(int port);
void listener_signals(void);
void accept_loop(int lfd) __attribute__((noreturn));

/* session.c */
void session_main(int fd, const struct sockaddr_in *peer) __attribute__((noreturn));
void session_exit(struct ftp_session *s, const char *why) __attribute__((noreturn));
void reply(struct ftp_session *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void reply_raw(struct ftp_session *s, const char *text);

/* path.c */
void path_normalize(char *path);
int vpath_resolve(const struct ftp_session *s, const char *arg,
		  char *vpath, size_t vlen, char *real, size_t rlen);

/* cmds.c */
void cmd_user(struct ftp_session *s, char *arg);
void cmd_pass(struct ftp_session *s, char *arg);
void cmd_syst(struct ftp_session *s, char *arg);
void cmd_pwd(struct ftp_session *s, char *arg);
void cmd_cwd(struct ftp_session *s, char *arg);
void cmd_cdup(struct ftp_session *s, char *arg);
void cmd_type(struct ftp_session *s, char *arg);
void cmd_size(struct ftp_session *s, char *arg);
void cmd_stat(struct ftp_session *s, char *arg);
void cmd_feat(struct ftp_session *s, char *arg);
void cmd_opts(struct ftp_session *s, char *arg);
void cmd_noop(struct ftp_session *s, char *arg);
void cmd_quit(struct ftp_session *s, char *arg);

/* transfer.c */
void cmd_pasv(struct ftp_session *s, char *arg);
void cmd_epsv(struct ftp_session *s, char *arg);
void cmd_list(struct ftp_session *s, char *arg);
void cmd_nlst(struct ftp_session *s, char *arg);
void cmd_retr(struct ftp_session *s, char *arg);
void cmd_stor(struct ftp_session *s, char *arg);

#endif
