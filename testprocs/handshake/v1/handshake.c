/*
 * handshake: a line server whose greeting another process must be able to
 * prove it saw, the way an SSH key exchange hashes the version banners.
 *
 *   handshake PORT    listens on 127.0.0.1:PORT; logs "listening on ..."
 *
 * On connect the server sends the banner line, IDENT "\r\n". Then, one per
 * line:
 *   HELLO nonce   ->  PROOF <16 hex digits>: FNV-1a 64 of IDENT, "\n",
 *                     nonce; the client computes the same over the banner
 *                     it received and compares
 *   VERSION       ->  OK <RELEASE>
 *   QUIT          ->  OK bye, and the server closes
 *
 * RELEASE is a literal of its own, and IDENT ends with it: the linker
 * stores RELEASE once, as IDENT's tail, so the code returning RELEASE
 * points into the middle of IDENT. A diff that ends IDENT where RELEASE
 * starts misses that IDENT changed with RELEASE, and a patched server would
 * then greet with one banner and prove another.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELEASE "1.0"
#define IDENT "SRV-2.0-hs_" RELEASE

static int write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static int reply(int fd, const char *s)
{
	return write_all(fd, s, strlen(s));
}

/* The greeting: IDENT with its line end, a literal of its own. */
__attribute__((noinline)) static int send_banner(int fd)
{
	return reply(fd, IDENT "\r\n");
}

__attribute__((noinline)) static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* What the key exchange hashes: IDENT itself, not the line sent. */
__attribute__((noinline)) static uint64_t banner_proof(const char *nonce)
{
	const char *ident = IDENT;
	uint64_t h = fnv(14695981039346656037ULL, ident, strlen(ident));
	h = fnv(h, "\n", 1);
	return fnv(h, nonce, strlen(nonce));
}

__attribute__((noinline)) static const char *cmd_version(void)
{
	return RELEASE;
}

static void *session(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char line[512];
	size_t len = 0;
	if (send_banner(fd) < 0)
		goto out;
	for (;;) {
		ssize_t r = read(fd, line + len, sizeof line - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		char *nl;
		while ((nl = memchr(line, '\n', len)) != NULL) {
			*nl = 0;
			if (nl > line && nl[-1] == '\r')
				nl[-1] = 0;
			char out[600];
			int quit = 0;
			if (strncmp(line, "HELLO ", 6) == 0)
				snprintf(out, sizeof out, "PROOF %016llx\n", (unsigned long long)banner_proof(line + 6));
			else if (strcmp(line, "VERSION") == 0)
				snprintf(out, sizeof out, "OK %s\n", cmd_version());
			else if (strcmp(line, "QUIT") == 0) {
				snprintf(out, sizeof out, "OK bye\n");
				quit = 1;
			} else
				snprintf(out, sizeof out, "ERR unknown command\n");
			if (reply(fd, out) < 0 || quit)
				goto out;
			len -= (size_t)(nl + 1 - line);
			memmove(line, nl + 1, len);
		}
		if (len == sizeof line - 1)
			break; /* a line too long: drop the client */
	}
out:
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 64) < 0) {
		perror("listen");
		return 1;
	}
	fprintf(stderr, "listening on 127.0.0.1:%s\n", argv[1]);
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_t th;
		if (pthread_create(&th, NULL, session, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(th);
	}
}
