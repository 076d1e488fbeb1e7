#include <stdio.h>
static const char *names[] = { "alpha", "beta", "gamma" };
int table[4] = { 1, 2, 3, 4 };
__attribute__((noinline)) int padding_fn(int x) {
	int s = 0; for (int i = 0; i < x; i++) { s += i * x ^ (s >> 3); if (s > 1000) s -= 999; } return s;
}
__attribute__((noinline)) int lookup(int i) { return table[i & 3]; }
__attribute__((noinline)) const char *name(int i) { return names[i % 3]; }
__attribute__((noinline)) int classify(int c) {
	switch (c) { case 0: return 10; case 1: return lookup(c); case 2: return 33; case 3: return 47; case 4: return 51; case 5: return 68; default: return -1; }
}
int main(int argc, char **argv) { printf("%d %s %d %d\n", lookup(argc), name(argc), classify(argc), padding_fn(argc)); return 0; }
