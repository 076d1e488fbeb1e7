#include <stdio.h>
__attribute__((noinline)) int scaled(int v) { return v * 3; }
__attribute__((noinline)) int caller(void) { return scaled(40); }
int main(void) { printf("%d\n", caller()); return 0; }
