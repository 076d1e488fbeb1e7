/* Functions whose frames the resume analysis judges; v2 changes each in a
   different place (see resume_test.go). */
int wait_conn(void);
void handle(int fd);
void setup(void);
void say(const char *m);
__attribute__((cold, noreturn)) void fail(const char *m);
int tail_target(int x);

volatile int hits;

int loop_banner(void) {
	setup();
#ifdef V2
	say("loop v2");
#endif
	for (;;) {
		int fd = wait_conn();
		if (fd < 0)
			break;
		handle(fd);
	}
	return 1;
}

int loop_ahead(void) {
	setup();
	for (;;) {
		int fd = wait_conn();
#ifdef V2
		hits++;
#endif
		if (fd < 0)
			break;
		handle(fd);
	}
	return 2;
}

#ifdef V2
#define THREE "THREE"
#else
#define THREE "three"
#endif

int sw_banner(void) {
	setup();
#ifdef V2
	say("switch v2");
#endif
	for (;;) {
		int c = wait_conn();
		switch (c) {
		case 0: handle(10); break;
		case 1: say("one"); break;
		case 2: handle(c * 3); break;
		case 3: say("three"); break;
		case 4: handle(44); break;
		case 5: say("five"); break;
		case 6: handle(66); break;
		default: return c;
		}
	}
}

int sw_case(void) {
	setup();
	for (;;) {
		int c = wait_conn();
		switch (c) {
		case 0: handle(11); break;
		case 1: say("one"); break;
		case 2: handle(c * 3); break;
		case 3: say(THREE); break;
		case 4: handle(44); break;
		case 5: say("five"); break;
		case 6: handle(66); break;
		default: return c;
		}
	}
}

int tail_wrap(int x) {
#ifdef V2
	hits++;
#endif
	int r = wait_conn();
	return tail_target(r + x);
}

int cold_loop(void) {
	setup();
#ifdef V2
	say("cold v2");
#endif
	for (;;) {
		int fd = wait_conn();
		if (__builtin_expect(fd < -5, 0))
			fail("bad fd");
		handle(fd);
		if (fd == 0)
			return 0;
	}
}

int cold_changed(void) {
	setup();
	for (;;) {
		int fd = wait_conn();
		if (__builtin_expect(fd < -5, 0))
#ifdef V2
			fail("bad descriptor");
#else
			fail("bad fd");
#endif
		handle(fd);
		if (fd == 0)
			return 0;
	}
}

typedef int (*fp_t)(int);
fp_t fps[2] = {tail_target, tail_target};

int indirect(int x) {
	setup();
#ifdef V2
	say("indirect v2");
#endif
	int r = wait_conn();
	return fps[r & 1](x);
}

int calls_changed(void) {
#ifdef V2
	hits += 2;
#endif
	int r = wait_conn();
	handle(r);
	return sw_case() + 1;
}

#ifdef V2
#define GREETING "hello v2"
#else
#define GREETING "hello"
#endif

/* The greeting's address is loop-invariant: gcc loads it into a
   callee-saved register before the loop, so the loop's instructions are
   the same in both versions while the value they use is not. */
int hoisted(void) {
	setup();
	for (;;) {
		int fd = wait_conn();
		if (fd < 0)
			break;
		say(GREETING);
		handle(fd);
	}
	return 3;
}

struct opts {
	int a, b;
};
void use_opts(struct opts *o);

/* A local whose address escapes lives on the stack; v2 initialises it
   differently before the loop, which then passes it on: the loop's code
   is the same, the frame's stack slot is not. */
int stack_local(void) {
#ifdef V2
	struct opts o = {1, 3};
#else
	struct opts o = {1, 2};
#endif
	setup();
	for (;;) {
		int fd = wait_conn();
		if (fd < 0)
			break;
		use_opts(&o);
	}
	return 4;
}

__attribute__((noreturn)) void serve_forever(void);

/* main's shape in many servers: set up, then a call that never returns,
   which gcc makes the function's last instruction. v2 logs before it. */
void ends_in_noreturn(void) {
	setup();
#ifdef V2
	say("noreturn v2");
#endif
	serve_forever();
}

void init_opts(struct opts *o);
void init_opts_v2(struct opts *o);

/* v2 fills the local in by another function: the instructions around the
   loop are the same, but the call that wrote the frame's slot is not. */
int escaped_init(void) {
	struct opts o;
#ifdef V2
	init_opts_v2(&o);
#else
	init_opts(&o);
#endif
	for (;;) {
		int fd = wait_conn();
		if (fd < 0)
			break;
		use_opts(&o);
	}
	return 5;
}
