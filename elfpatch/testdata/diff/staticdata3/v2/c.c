/* v2 adds a third file with its own static count. */
static int count;
__attribute__((noinline)) int c_hit(void) { return count += 3; }
