#include <stdio.h>
/* Two function-local statics named counter: GCC emits counter.0 and
 * counter.1. v2 adds a third in a function placed first, which renumbers
 * them, and changes the initial value of tock's. */
__attribute__((noinline)) int first(void) { static int counter = 7; return counter *= 3; }
__attribute__((noinline)) int tick(void) { static int counter = 1; return counter++; }
__attribute__((noinline)) int tock(void) { static int counter = 200; return counter += 2; }
int main(void) { printf("%d %d %d\n", tick(), tock(), first()); return 0; }
