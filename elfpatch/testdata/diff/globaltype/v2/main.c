#include <stdio.h>
#include <signal.h>
struct stats { int hits; long bytes; int misses; };
struct stats g_stats;
volatile sig_atomic_t got_signal;
int limit = 20;
__attribute__((noinline)) void hit(void) { g_stats.hits++; g_stats.bytes += 1; got_signal = 0; }
int main(void) { hit(); printf("%d %d\n", g_stats.hits, limit); return 0; }
