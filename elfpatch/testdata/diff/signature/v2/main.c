#include <stdio.h>
__attribute__((noinline)) long area(long w, long h, long d) { return w * h * d; }
__attribute__((noinline)) int room(int n) { return (int)area(n, n + 1, 2); }
int main(int argc, char **argv) { printf("%d\n", room(argc)); return 0; }
