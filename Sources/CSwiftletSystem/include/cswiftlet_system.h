// CSystem: Linux calls Swift cannot import directly (GNU extensions, variadic prctl).
#ifndef CSYSTEM_H
#define CSYSTEM_H
#define _GNU_SOURCE 1
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <fcntl.h>

/// Names the calling thread (at most 15 bytes are kept).
static inline int csystem_set_thread_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }
/// pipe2(fds, O_CLOEXEC).
static inline int csystem_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
#endif
