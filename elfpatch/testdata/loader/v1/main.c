/* tick v1: calls work() every few ms; work prints one line per call. */
#include <stdio.h>
#include <string.h>
#include <time.h>

int counter;                 /* state that must survive the patch */
char name[32] = "graft";     /* strlen(name) is a real (IFUNC) call */
static int seen;             /* same name as other.c's static */
int hist[8];                 /* a loop gcc vectorises: SSE at -O2, VEX with -mavx2 */

int other(int x);

__attribute__((noinline)) static int helper(int x)
{
	seen++;
	return x * 2;
}

__attribute__((noinline)) int kind(int x)
{
	switch (x % 7) {     /* a jump table in .rodata */
	case 0: return 11;
	case 1: return 23;
	case 2: return 37;
	case 3: return 41;
	case 4: return 59;
	case 5: return 61;
	default: return 79;
	}
}

__attribute__((noinline)) void work(void)
{
	static int calls;    /* a function-static: calls.0 */
	calls++;
	counter++;
	for (int i = 0; i < 8; i++)
		hist[i] += i + 1;
	printf("v1 counter=%d calls=%d len=%zu helper=%d other=%d kind=%d seen=%d hist=%d\n",
	       counter, calls, strlen(name), helper(counter), other(counter),
	       kind(counter), seen, hist[7]);
	if (counter % 100 == 0)
		fprintf(stderr, "v1 at %d\n", counter);
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
