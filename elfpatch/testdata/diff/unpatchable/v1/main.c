#include <stdio.h>
/* Written in assembly so the layout does not depend on the compiler.
 * tiny is 3 bytes in v1 (xor; ret) and count follows it at once, with no
 * padding: too short for a 5-byte jump. count loops back to offset 2,
 * inside the bytes a jump would overwrite. */
int tiny(void);
int count(int n);
__asm__(".text\n.p2align 4\n.globl tiny\n.type tiny,@function\ntiny:\n"
	"\txor %eax,%eax\n\tret\n.size tiny,.-tiny\n"
	".globl count\n.type count,@function\ncount:\n"
	"\txor %eax,%eax\n1:\tadd $1,%eax\n\tcmp %edi,%eax\n\tjl 1b\n\tret\n"
	".size count,.-count\n");
int main(int argc, char **argv) { printf("%d %d\n", tiny(), count(argc)); return 0; }
