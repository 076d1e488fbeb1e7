/* tick v2: work() prints a different line, uses a new global and a new
 * function, and helper() computes something else. */
#include <stdio.h>
#include <string.h>
#include <time.h>

int counter;
char name[32] = "graft";
static int seen;
int hist[8];                 /* a loop gcc vectorises: SSE at -O2, VEX with -mavx2 */
int bonus = 100;             /* new in v2: lives in the new image */

int other(int x);

__attribute__((noinline)) static int helper(int x)
{
	seen++;
	return x * 3;
}

__attribute__((noinline)) int kind(int x)
{
	switch (x % 7) {
	case 0: return 11;
	case 1: return 23;
	case 2: return 37;
	case 3: return 41;
	case 4: return 59;
	case 5: return 61;
	default: return 79;
	}
}

static int (*const ops[])(int) = {kind, other};   /* pointers to OLD's functions */

__attribute__((noinline)) int added(int x)
{
	bonus++;
	return ops[x & 1](x) + bonus;
}

__attribute__((noinline)) void work(void)
{
	static int calls;
	calls++;
	counter++;
	for (int i = 0; i < 8; i++)
		hist[i] += i + 1;
	printf("v2 counter=%d calls=%d len=%zu helper=%d other=%d kind=%d seen=%d hist=%d added=%d\n",
	       counter, calls, strlen(name), helper(counter), other(counter),
	       kind(counter), seen, hist[7], added(counter));
	if (counter % 100 == 0)
		fprintf(stderr, "v2 at %d\n", counter);
	fflush(stdout);
}

int main(void)
{
	struct timespec ts = {0, 3 * 1000 * 1000};
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		work();
		nanosleep(&ts, NULL);
	}
}
