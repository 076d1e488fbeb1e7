#include <stdio.h>
#include <signal.h>
struct stats { int hits; int misses; };
struct stats g_stats;
int got_signal;
int limit = 10;
__attribute__((noinline)) void hit(void) { g_stats.hits++; got_signal = 0; }
int main(void) { hit(); printf("%d %d\n", g_stats.hits, limit); return 0; }
