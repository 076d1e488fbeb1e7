/* acceptd: the accept wrapper, in its own unit as servers keep it. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acceptd.h"

int accept_conn(int lfd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	int fd = accept(lfd, (struct sockaddr *)&sa, &len);
	if (fd >= 0 && sa.sin_family != AF_INET) {
		close(fd);
		return -1;
	}
	return fd;
}
