#include <stdio.h>
/* zero is 3 bytes in v1 (xor; ret): too short for a 5-byte jump. */
__attribute__((noinline)) int zero(void) { return 0; }
/* count loops back to offset 2, inside the bytes a jump would overwrite.
 * Written in assembly so the layout does not depend on the compiler. */
int count(int n);
__asm__(".text\n.globl count\n.type count,@function\ncount:\n"
	"\txor %eax,%eax\n1:\tadd $1,%eax\n\tcmp %edi,%eax\n\tjl 1b\n\tret\n"
	".size count,.-count\n");
int main(int argc, char **argv) { printf("%d %d\n", zero(), count(argc)); return 0; }
