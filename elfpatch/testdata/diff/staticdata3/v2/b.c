static int count;
__attribute__((noinline)) int b_hit(void) { count += 2; return count; }
