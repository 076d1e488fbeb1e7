/* Fixture of framevars_test.go, built by the test with
 *   gcc -g -gdwarf-5 -O2 -o vars vars.c   (and with -gdwarf-4)
 * Each function has one call whose return address the test asks about:
 * shadow: an outer and an inner "x" both in scope (ambiguous), a local in
 *   a callee-saved register, one in the frame, a const local
 *   (DW_AT_const_value) and one computed but never used (optimized out);
 * framed: a frame-pointer frame (CFA = rbp+16), for FrameCFA's error;
 * split: an unlikely branch gcc moves into split.cold, so the function
 *   has two address ranges and the call to fail is in the second.
 */
volatile int g;

__attribute__((noinline)) void use(int *p) { g += *p; }
__attribute__((noinline)) int get(void) { return g; }

int shadow(int a)
{
	int x = get();
	const int k = 42;
	int gone = a * 5 + get();
	int slot = a;
	use(&slot);
	{
		int x = a + get();
		use(&x);
		g += x;
	}
	return x + k + slot;
}

__attribute__((optimize("no-omit-frame-pointer"))) int framed(int a)
{
	int slot = a;
	use(&slot);
	return slot;
}

__attribute__((cold, noinline)) void fail(int *p) { g -= *p; }

int split(int a)
{
	int slot = a;
	use(&slot);
	if (a > 100) {
		int local = a * 2;
		fail(&local);
		slot += local;
	}
	return slot;
}

int main(int argc, char **argv)
{
	(void)argv;
	return shadow(argc) + framed(argc) + split(argc);
}
