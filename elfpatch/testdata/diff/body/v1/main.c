#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) int compute(int x) { return x * 2 + 1; }
__attribute__((noinline)) int other(int x) { return x - 7; }
int main(int argc, char **argv) { printf("%d %d\n", compute(argc), other(argc)); return 0; }
