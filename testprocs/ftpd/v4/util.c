/* graftftpd: logging and I/O helpers shared by the listener and sessions. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "ftpd.h"

/* One line on stderr per call, prefixed like syslog would. */
void log_msg(const char *fmt, ...)
{
	char buf[640];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof buf, "graftftpd[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = 0;
	while (buf[n] != '\0')
		n++;
	buf[n++] = '\n';
	/* a single write, so lines of concurrent sessions do not interleave */
	write_all(2, buf, (size_t)n);
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
