#ifndef ACCEPTD_H
#define ACCEPTD_H
void *serve(void *arg);
#endif
