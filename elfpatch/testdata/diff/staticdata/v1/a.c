static int count;
__attribute__((noinline)) int a_hit(void) { return ++count; }
