/* Helpers the functions under test call; the same in both versions and in
   their own unit, so gcc -O2 keeps the calls. */
#include <stdio.h>
#include <stdlib.h>

volatile int conns;

int wait_conn(void) { return conns++ % 9 - 1; }
void handle(int fd) { printf("handle %d\n", fd); }
void setup(void) { conns = 0; }
void say(const char *m) { puts(m); }
__attribute__((cold, noinline, noreturn)) void fail(const char *m) { fprintf(stderr, "%s\n", m); exit(2); }
int tail_target(int x) { return x * 7; }
struct opts { int a, b; };
void use_opts(struct opts *o) { printf("%d %d\n", o->a, o->b); }
int wait_conn(void);
__attribute__((noreturn)) void serve_forever(void) { for (;;) if (wait_conn() > 100) handle(0); }
void init_opts(struct opts *o) { o->a = 1; o->b = 2; }
void init_opts_v2(struct opts *o) { o->a = 1; o->b = 3; }
