/* libkv v2 (see ../VERSIONS.md). */
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include "../kv.h"

#define SLOTS 64

struct slot {
	char key[32];
	char val[64];
	int used;
};

static struct slot table[SLOTS];
static long ops;
/* Per-thread: how many kv_format calls this thread made (TLS of the library). */
static __thread long fmt_calls;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned slot_of(const char *key)
{
	unsigned h = 5381;
	for (; *key; key++)
		h = h * 33 + (unsigned char)*key;
	return h % SLOTS;
}

/* A key is 1 to 31 printable characters. */
int kv_check_key(const char *key)
{
	size_t n = strlen(key);
	if (n == 0 || n >= sizeof table[0].key)
		return 0;
	for (; *key; key++)
		if (*key <= ' ' || *key == '=' || *key > '~')
			return 0;
	return 1;
}

static void quote(const char *in, char *out, int len)
{
	snprintf(out, len, "%s", in);
}

int kv_put(const char *key, const char *val)
{
	if (!kv_check_key(key))
		return -1;
	pthread_mutex_lock(&mu);
	unsigned i = slot_of(key);
	for (unsigned n = 0; n < SLOTS; n++, i = (i + 1) % SLOTS) {
		if (!table[i].used || strcmp(table[i].key, key) == 0) {
			snprintf(table[i].key, sizeof table[i].key, "%s", key);
			snprintf(table[i].val, sizeof table[i].val, "%s", val);
			table[i].used = 1;
			ops++;
			pthread_mutex_unlock(&mu);
			return 0;
		}
	}
	pthread_mutex_unlock(&mu);
	return -1;
}

const char *kv_get(const char *key)
{
	const char *v = NULL;
	pthread_mutex_lock(&mu);
	unsigned i = slot_of(key);
	for (unsigned n = 0; n < SLOTS && table[i].used; n++, i = (i + 1) % SLOTS) {
		if (strcmp(table[i].key, key) == 0) {
			v = table[i].val;
			break;
		}
	}
	ops++;
	pthread_mutex_unlock(&mu);
	return v;
}

int kv_format(const char *key, char *buf, int len)
{
	const char *v = kv_get(key);
	char q[80];
	fmt_calls++;
	if (!v)
		return -1;
	quote(v, q, sizeof q);
	return snprintf(buf, len, "%s=%s", key, q);
}

long kv_thread_calls(void)
{
	return fmt_calls;
}

long kv_ops(void)
{
	return ops;
}

const char *kv_version(void)
{
	return "libkv 2";
}
