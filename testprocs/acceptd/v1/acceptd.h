#ifndef ACCEPTD_H
#define ACCEPTD_H
int accept_conn(int lfd);
void *serve(void *arg);
#endif
