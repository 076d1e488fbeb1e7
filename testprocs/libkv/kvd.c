/*
 * kvd: a threaded TCP key-value server built on libkv (a thread per
 * connection). Usage: kvd PORT. One command a line:
 *
 *   PUT key value   -> OK | ERR bad key
 *   GET key         -> VAL value | NONE
 *   FMT key         -> key=value as libkv formats it | NONE
 *   CHECK key       -> YES | NO        (libkv's kv_check_key)
 *   OPS             -> OPS n           (libkv's own operation counter)
 *   TCALLS          -> TCALLS n        (FMT calls of this connection's thread: libkv's TLS)
 *   VERSION         -> libkv's version string
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "kv.h"

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
	char line[256], buf[256];
	if (!in || !out)
		return NULL;
	while (fgets(line, sizeof line, in)) {
		line[strcspn(line, "\r\n")] = 0;
		char *cmd = strtok(line, " "), *key = strtok(NULL, " "), *val = strtok(NULL, "");
		if (!cmd)
			continue;
		if (!strcmp(cmd, "PUT") && key && val) {
			fprintf(out, kv_put(key, val) == 0 ? "OK\n" : "ERR bad key\n");
		} else if (!strcmp(cmd, "PUTRAW") && key && val) {
			/* a key with spaces, the way some clients send it: "PUTRAW a%20b v" */
			for (char *p = key; *p; p++)
				if (*p == '%' && p[1] == '2' && p[2] == '0') {
					*p = ' ';
					memmove(p + 1, p + 3, strlen(p + 3) + 1);
				}
			fprintf(out, kv_put(key, val) == 0 ? "OK\n" : "ERR bad key\n");
		} else if (!strcmp(cmd, "GET") && key) {
			const char *v = kv_get(key);
			fprintf(out, v ? "VAL %s\n" : "NONE\n", v);
		} else if (!strcmp(cmd, "FMT") && key) {
			fprintf(out, kv_format(key, buf, sizeof buf) >= 0 ? "%s\n" : "NONE\n", buf);
		} else if (!strcmp(cmd, "CHECK") && key) {
			fprintf(out, kv_check_key(key) ? "YES\n" : "NO\n");
		} else if (!strcmp(cmd, "TCALLS")) {
			fprintf(out, "TCALLS %ld\n", kv_thread_calls());
		} else if (!strcmp(cmd, "OPS")) {
			fprintf(out, "OPS %ld\n", kv_ops());
		} else if (!strcmp(cmd, "VERSION")) {
			fprintf(out, "%s\n", kv_version());
		} else {
			fprintf(out, "ERR unknown\n");
		}
		fflush(out);
	}
	fclose(in);
	fclose(out);
	return NULL;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 0, one = 1;
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 64)) {
		perror("kvd: bind");
		return 1;
	}
	fprintf(stderr, "kvd listening on %d with %s\n", port, kv_version());
	for (;;) {
		int c = accept(ls, NULL, NULL);
		if (c < 0)
			continue;
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)(long)c) == 0)
			pthread_detach(t);
		else
			close(c);
	}
}
