#ifndef ACCEPTD_H
#define ACCEPTD_H
#define ACCEPTD_VERSION "2.1"
extern unsigned long accepts;
int accept_conn(int lfd);
void *serve(void *arg);
#endif
