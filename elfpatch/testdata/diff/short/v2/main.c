#include <stdio.h>
/* flag is 3 bytes in v1 (xor; ret), but gcc aligns the next function to 16
 * bytes, so nops follow it: the 5-byte jump fits by spilling into them. */
__attribute__((noinline)) int flag(void) { return 7; }
__attribute__((noinline)) int after(int x) { return x * 5 + flag(); }
int main(int argc, char **argv) { printf("%d\n", after(argc)); return 0; }
