#include <stdio.h>
__attribute__((noinline)) void banner(void) { puts("server version 1.1 ready"); }
__attribute__((noinline)) void bye(void) { puts("bye"); }
int main(void) { banner(); bye(); return 0; }
