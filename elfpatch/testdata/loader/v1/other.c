/* other.c: unchanged between versions. Its static helper and seen share
 * their names with main.c's, so the loader must tell the CUs apart. */
#include <string.h>

static int seen;

__attribute__((noinline)) static int helper(int x)
{
	return x + 1000;
}

__attribute__((noinline)) int other(int x)
{
	seen++;
	return helper(x) + seen * 0;
}
