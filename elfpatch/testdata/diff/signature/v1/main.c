#include <stdio.h>
__attribute__((noinline)) int area(int w, int h) { return w * h; }
__attribute__((noinline)) int room(int n) { return area(n, n + 1); }
int main(int argc, char **argv) { printf("%d\n", room(argc)); return 0; }
