#include <stdio.h>
int requests;
__attribute__((noinline)) void handle(void) { requests++; }
int main(void) { handle(); printf("%d\n", requests); return 0; }
