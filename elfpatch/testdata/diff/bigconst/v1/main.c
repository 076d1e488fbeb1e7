#include <stdio.h>
#include <string.h>
#define X8 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88
#define X64 X8, X8, X8, X8, X8, X8, X8, X8
#define X512 X64, X64, X64, X64, X64, X64, X64, X64
/* The same in both versions: a table larger than the diff compares, with
   no NUL and no other object starting inside it, so its end is unknown. */
__attribute__((noinline)) void fill(unsigned char *out) {
	const unsigned char t[4608] = {X512, X512, X512, X512, X512, X512, X512, X512, X512};
	memcpy(out, t, sizeof t);
}
int main(void) {
	static unsigned char b[4608];
	fill(b);
	printf("v1 %d\n", b[7]);
	return 0;
}
