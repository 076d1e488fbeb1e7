/*
 * kvstat: a second, single-threaded program on libkv (poll loop, one
 * request a connection). Usage: kvstat PORT. It keeps a few keys of its
 * own in libkv and answers one line a connection:
 *
 *   CHECK key  -> YES | NO          (libkv's kv_check_key)
 *   FMT key    -> key=value | NONE  (libkv's kv_format)
 *   OPS        -> OPS n
 *   VERSION    -> libkv's version string
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "kv.h"

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 0, one = 1;
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	kv_put("host", "kvstat");
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 64)) {
		perror("kvstat: bind");
		return 1;
	}
	for (;;) {
		struct pollfd p = {.fd = ls, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			continue;
		int c = accept(ls, NULL, NULL);
		if (c < 0)
			continue;
		char line[256] = {0}, out[300];
		ssize_t n = read(c, line, sizeof line - 1);
		if (n > 0) {
			line[strcspn(line, "\r\n")] = 0;
			char *cmd = strtok(line, " "), *key = strtok(NULL, "");
			if (cmd && !strcmp(cmd, "CHECK") && key)
				snprintf(out, sizeof out, "%s\n", kv_check_key(key) ? "YES" : "NO");
			else if (cmd && !strcmp(cmd, "FMT") && key) {
				char buf[200];
				snprintf(out, sizeof out, "%s\n", kv_format(key, buf, sizeof buf) >= 0 ? buf : "NONE");
			} else if (cmd && !strcmp(cmd, "OPS"))
				snprintf(out, sizeof out, "OPS %ld\n", kv_ops());
			else if (cmd && !strcmp(cmd, "VERSION"))
				snprintf(out, sizeof out, "%s\n", kv_version());
			else
				snprintf(out, sizeof out, "ERR unknown\n");
			if (write(c, out, strlen(out)) < 0)
				perror("kvstat: write");
		}
		close(c);
	}
}
