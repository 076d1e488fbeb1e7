/* Built with -mindirect-branch=thunk -mfunction-return=thunk (../CFLAGS). */
#include <stdio.h>
typedef int (*op)(int);
__attribute__((noinline)) int twice(int x) { return 2 * x; }
__attribute__((noinline)) int grow(int x) { return x * x + x / 3 + 7; }
__attribute__((noinline)) int apply(op f, int x) { return f(x) + 1; }
static op table[] = { twice, grow };
int main(int argc, char **argv) { printf("%d\n", apply(table[argc & 1], argc)); return 0; }
