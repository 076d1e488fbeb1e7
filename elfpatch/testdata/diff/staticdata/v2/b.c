/* Two files each define a static count; b_hit changes (v2). */
static int count;
__attribute__((noinline)) int b_hit(void) { count += 2; return count; }
