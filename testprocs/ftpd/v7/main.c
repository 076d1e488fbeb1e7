/*
 * graftftpd: command line and configuration.
 *
 * usage: ftpd PORT [-d DIR] [-u USERFILE] [-m MAXCLIENTS]
 *
 *   -d DIR         directory to serve (default: the current directory)
 *   -u USERFILE    local users, one "name:password" per line
 *   -m MAXCLIENTS  most sessions at once (default 0: no limit)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpd.h"

struct ftpd_config ftpd_config;
struct ftpd_stats ftpd_stats;

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s PORT [-d DIR] [-u USERFILE] [-m MAXCLIENTS]\n", prog);
	exit(2);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = ".";
	unsigned long v;
	int opt, lfd;

	while ((opt = getopt(argc, argv, "d:u:m:")) != -1) {
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'u':
			ftpd_config.user_file = optarg;
			break;
		case 'm':
			if (parse_uint(optarg, 100000, &v) < 0)
				usage(argv[0]);
			ftpd_config.max_clients = (unsigned int)v;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (optind != argc - 1 || parse_uint(argv[optind], 65535, &v) < 0)
		usage(argv[0]);
	ftpd_config.port = (int)v;

	if (realpath(dir, ftpd_config.root) == NULL) {
		log_msg("cannot serve %s: %s", dir, strerror(errno));
		return 1;
	}
	/* root "/" would make every real path start with "//" */
	if (strcmp(ftpd_config.root, "/") == 0)
		ftpd_config.root[0] = '\0';

	lfd = listener_open(ftpd_config.port);
	if (lfd < 0)
		return 1;
	listener_signals();
	accept_loop(lfd);
}
