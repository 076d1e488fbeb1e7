/* acceptd: one thread per connection: greet, echo one line, close. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "acceptd.h"

void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[256];
	dprintf(fd, "acceptd 5 hello\n");
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n > 0) {
		buf[n] = 0;
		dprintf(fd, "echo %s", buf);
	}
	close(fd);
	return NULL;
}
