#include <stdio.h>
#include <stdlib.h>
extern void fatal(const char *m, int v) __attribute__((cold, noreturn));
static __attribute__((noinline)) int scale(int x, int k) { return x * k + (x >> 3); }
int a(int x) { return scale(x, 7); }
int b(int x) { return scale(x + 1, 7); }
__attribute__((noinline)) int check(const char *s, int y) {
	int r = 0;
	for (int i = 0; i < y; i++) {
		if (s[i] == 0) fatal("bad byte", i);
		r += s[i] * i;
	}
	return r;
}
void fatal(const char *m, int v) { fprintf(stderr, "%s %d\n", m, v); exit(2); }
int main(int argc, char **argv) { printf("%d %d %d\n", a(argc), b(argc), check(argv[0], argc)); return 0; }
