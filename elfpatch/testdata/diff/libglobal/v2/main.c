#include <stdio.h>
#include <unistd.h>
/* v1 defines optind itself (it preempts libc's); v2 drops the definition
 * and uses libc's. Built with -fPIC, v2 reaches optind through a GOT slot
 * bound to libc: new code would not see the running process's copy. */
__attribute__((noinline)) int next_arg(void) { return optind += 2; }
int main(void) { printf("%d\n", next_arg()); return 0; }
