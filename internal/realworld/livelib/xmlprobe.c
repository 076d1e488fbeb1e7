/* xmlprobe: a tiny TCP server on the system's expat (libexpat.so.1), for
 * internal/realworld/expat-live.sh. One request a connection:
 *   PARSE <xml>  -> "ok N" (N: documents parsed so far) | "error: <expat's message>"
 *   STOP         -> XML_StopParser on a parser that never started:
 *                   "ok" | "error: <expat's message>"
 */
#include <arpa/inet.h>
#include <expat.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long parsed;

static void answer(int c, const char *line)
{
	char out[256];
	XML_Parser p = XML_ParserCreate(NULL);
	if (!strncmp(line, "PARSE ", 6)) {
		if (XML_Parse(p, line + 6, (int)strlen(line + 6), 1) == XML_STATUS_OK)
			snprintf(out, sizeof out, "ok %ld\n", ++parsed);
		else
			snprintf(out, sizeof out, "error: %s\n", XML_ErrorString(XML_GetErrorCode(p)));
	} else if (!strcmp(line, "STOP")) {
		XML_GetBuffer(p, 1);
		if (XML_StopParser(p, XML_TRUE) == XML_STATUS_OK)
			snprintf(out, sizeof out, "ok\n");
		else
			snprintf(out, sizeof out, "error: %s\n", XML_ErrorString(XML_GetErrorCode(p)));
	} else {
		snprintf(out, sizeof out, "error: unknown request\n");
	}
	XML_ParserFree(p);
	if (write(c, out, strlen(out)) < 0)
		perror("xmlprobe: write");
}

int main(int argc, char **argv)
{
	int one = 1, port = argc > 1 ? atoi(argv[1]) : 0;
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (port <= 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 16)) {
		perror("xmlprobe");
		return 1;
	}
	for (;;) {
		int c = accept(ls, NULL, NULL);
		if (c < 0)
			continue;
		char line[1024] = {0};
		ssize_t n = read(c, line, sizeof line - 1);
		if (n > 0) {
			line[strcspn(line, "\r\n")] = 0;
			answer(c, line);
		}
		close(c);
	}
}
