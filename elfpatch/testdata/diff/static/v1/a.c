static __attribute__((noinline)) int helper(int x) { return x + 1; }
int a_entry(int x) { return helper(x) * 5; }
