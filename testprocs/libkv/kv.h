/* libkv: a tiny in-memory key-value store as a shared library, the sample
 * target for patching a function inside a library a process has mapped.
 * The library keeps its own state (the table and an operation counter);
 * kvd and kvstat both link against it. */
#ifndef KV_H
#define KV_H
int kv_put(const char *key, const char *val);
const char *kv_get(const char *key);
int kv_check_key(const char *key);
long kv_ops(void);
/* kv_thread_calls: kv_format calls made by the calling thread. */
long kv_thread_calls(void);
const char *kv_version(void);
/* kv_format writes "key=value" for a stored key into buf. */
int kv_format(const char *key, char *buf, int len);
#endif
