#include <stdio.h>
/* Type layouts through bitfields, enums and typedefs. v2: flags.a widens
 * from 3 to 4 bits (b moves), enum state gains a value in the middle
 * (BUSY's value changes), hits' typedef is renamed (same layout). */
struct flags { unsigned a : 4; unsigned b : 5; };
enum state { IDLE, PAUSED, BUSY };
typedef int counter_t;
struct flags g_flags;
enum state g_state;
counter_t hits;
__attribute__((noinline)) void touch(void) { g_flags.b++; g_state = BUSY; hits++; }
int main(void) { touch(); printf("%d %d %d\n", g_flags.b, g_state, hits); return 0; }
