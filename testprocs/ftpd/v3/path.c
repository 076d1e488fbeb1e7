/*
 * graftftpd: virtual paths. A session's paths are absolute paths below the
 * served directory; the real path is the root followed by the virtual one.
 */
#include <stdio.h>
#include <string.h>

#include "ftpd.h"

/*
 * Canonicalise an absolute virtual path in place: collapse repeated
 * slashes and drop "." components and any trailing slash.
 */
void path_normalize(char *path)
{
	char *out = path;
	const char *in = path;

	while (*in != '\0') {
		const char *comp;
		size_t len;

		while (*in == '/')
			in++;
		if (*in == '\0')
			break;
		comp = in;
		while (*in != '\0' && *in != '/')
			in++;
		len = (size_t)(in - comp);
		if (len == 1 && comp[0] == '.')
			continue;
		*out++ = '/';
		memmove(out, comp, len);
		out += len;
	}
	if (out == path)
		*out++ = '/';
	*out = '\0';
}

/*
 * Resolve arg (absolute, or relative to the session's directory) into its
 * canonical virtual path and the real path behind it. -1: too long.
 */
int vpath_resolve(const struct ftp_session *s, const char *arg,
		  char *vpath, size_t vlen, char *real, size_t rlen)
{
	int n;

	if (arg == NULL || *arg == '\0')
		arg = ".";
	if (arg[0] == '/')
		n = snprintf(vpath, vlen, "%s", arg);
	else
		n = snprintf(vpath, vlen, "%s/%s", s->cwd, arg);
	if (n < 0 || (size_t)n >= vlen)
		return -1;
	path_normalize(vpath);
	n = snprintf(real, rlen, "%s%s", ftpd_config.root, vpath);
	if (n < 0 || (size_t)n >= rlen)
		return -1;
	return 0;
}
