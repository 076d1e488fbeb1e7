/* acceptd: the accept wrapper, in its own unit as servers keep it. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "acceptd.h"

unsigned long accepts;

int accept_conn(int lfd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	accepts++;
	int fd = accept(lfd, (struct sockaddr *)&sa, &len);
	return fd;
}
