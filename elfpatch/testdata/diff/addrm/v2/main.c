#include <stdio.h>
__attribute__((noinline)) int new_fn(int x) { return x ^ 0x77; }
__attribute__((noinline)) int keep(int x) { return x + 3; }
int main(int argc, char **argv) { printf("%d\n", new_fn(argc) + keep(argc)); return 0; }
