#include <stdio.h>
__attribute__((noinline)) int old_fn(int x) { return x ^ 0x55; }
__attribute__((noinline)) int keep(int x) { return x + 3; }
int main(int argc, char **argv) { printf("%d\n", old_fn(argc) + keep(argc)); return 0; }
