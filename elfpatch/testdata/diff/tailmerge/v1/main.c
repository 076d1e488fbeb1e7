#include <stdio.h>
#include <string.h>
#define REL "1.1"
/* The banner's tail is the bare release string: the linker stores "1.1"
   once, inside the banner. */
__attribute__((noinline)) const char *banner(void) { return "SRV-2.0-x_" REL; }
__attribute__((noinline)) const char *release(void) { return REL; }
__attribute__((noinline)) unsigned digest(void) {
	unsigned h = 5381;
	for (const char *p = banner(); *p; p++)
		h = h * 33 + (unsigned char)*p;
	return h;
}
int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "--version") == 0)
		puts(release());
	else
		printf("%s %u\n", banner(), digest());
	return 0;
}
