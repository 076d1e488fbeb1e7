#define _GNU_SOURCE
/* acceptd v6: v5 checking the peer after accept4 returns.

   acceptd: a threaded TCP server (sample target). Usage: acceptd [PORT];
   prints "port N" once listening. main never returns: its frame stays on
   the main thread's stack for the life of the process, waiting in
   accept_conn. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acceptd.h"

/* The accept wrapper, static here: gcc specialises it for the one flags
   value main passes (accept_conn.constprop.0), as it does in real
   servers. */
static __attribute__((noinline)) int accept_conn(int lfd, int flags)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof peer;
	int fd = accept4(lfd, (struct sockaddr *)&peer, &len, flags);
	if (fd >= 0 && peer.sin_family != AF_INET) {
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 0;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 64) < 0) {
		perror("acceptd: bind/listen");
		return 1;
	}
	socklen_t len = sizeof sa;
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	printf("port %d\n", ntohs(sa.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept_conn(lfd, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR)
				perror("acceptd: accept");
			continue;
		}
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}
