#include <stdio.h>
#include <stdlib.h>
/* v2 adds an enumerator at the end: same size, every old value kept. */
enum state { IDLE, BUSY, DONE, FAILED };

struct job {
	int id;
	enum state st;
};

enum state g_state = BUSY;

__attribute__((noinline)) const char *state_name(enum state s)
{
	switch (s) {
	case IDLE: return "idle";
	case BUSY: return "busy";
	case DONE: return "done";
	case FAILED: return "failed";
	}
	return "?";
}

__attribute__((noinline)) void show(struct job *j)
{
	printf("job %d is %s\n", j->id, state_name(j->st));
}

int main(int argc, char **argv)
{
	struct job *j = malloc(sizeof *j);
	j->id = argc;
	j->st = g_state;
	show(j);
	free(j);
	return 0;
}
