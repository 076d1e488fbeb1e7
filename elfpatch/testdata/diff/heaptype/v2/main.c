#include <stdio.h>
#include <stdlib.h>
struct session { int flags; int fd; char user[16]; };
__attribute__((noinline)) int session_fd(struct session *s) { return s->fd; }
int main(void) { struct session *s = calloc(1, sizeof *s); printf("%d\n", session_fd(s)); free(s); return 0; }
