#include <stdio.h>
static const char *names[] = { "alpha", "beta", "gamma" };
int table[4] = { 1, 2, 3, 4 };
__attribute__((noinline)) int lookup(int i) { return table[i & 3]; }
__attribute__((noinline)) const char *name(int i) { return names[i % 3]; }
__attribute__((noinline)) int classify(int c) {
	switch (c) { case 0: return 10; case 1: return lookup(c); case 2: return 33; case 3: return 47; case 4: return 51; case 5: return 68; default: return -1; }
}
int main(int argc, char **argv) { printf("%d %s %d\n", lookup(argc), name(argc), classify(argc)); return 0; }
