#include <stdio.h>
static __attribute__((noinline)) int helper(int x) { return x * 9 + (x >> 2); }
int a_entry(int x);
int main(int argc, char **argv) { printf("%d\n", helper(argc) + a_entry(argc)); return 0; }
