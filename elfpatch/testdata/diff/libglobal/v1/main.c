#include <stdio.h>
/* v1 defines optind itself (it preempts libc's); v2 drops the definition
 * and uses libc's. Built with -fPIC, v2 reaches optind through a GOT slot
 * bound to libc: new code would not see the running process's copy. */
int optind = 1;
__attribute__((noinline)) int next_arg(void) { return optind++; }
int main(void) { printf("%d\n", next_arg()); return 0; }
