#include <stdio.h>
int requests;
long bytes_served;
__attribute__((noinline)) void handle(void) { requests++; bytes_served += 512; }
int main(void) { handle(); printf("%d\n", requests); return 0; }
