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
/// Installs Swiftlet's seccomp filter on every thread of the process (TSYNC) and a SIGSYS
/// handler that names a forbidden call and exits with status 1. `unix_connect`: socket(AF_UNIX)
/// and connect too (vsock). 0, or -errno.
int cswiftlet_seccomp_install(int serve_api, int unix_connect);
/// Unblocks SIGSYS on the calling thread: a blocked SIGSYS from the filter kills the process
/// without the handler's message, and threads inherit masks that block everything.
void cswiftlet_unblock_sigsys(void);
/// 1 in a ThreadSanitizer or AddressSanitizer build: their runtimes make calls the filter forbids.
int cswiftlet_sanitized_build(void);
/// The allowed system-call numbers, for reports and tests.
int cswiftlet_seccomp_allowed_count(void);
int cswiftlet_seccomp_allowed_at(int index);
int cswiftlet_seccomp_api_allowed_count(void);
int cswiftlet_seccomp_api_allowed_at(int index);

// The event loop's system calls (eventloop.c). Each returns a descriptor or count, or -errno.
#include <stdint.h>
/// epoll_create1(EPOLL_CLOEXEC).
int cswiftlet_epoll_create(void);
/// epoll_ctl: op 0 add, 1 modify, 2 delete; `data` comes back with the event.
int cswiftlet_epoll_control(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// epoll_wait into two arrays (at most 64 events).
int cswiftlet_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int capacity, int timeout);
/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
int cswiftlet_eventfd(void);
/// A CLOCK_MONOTONIC timerfd armed to fire after `first_ns`, then every `interval_ns` (0: once).
int cswiftlet_timerfd(uint64_t first_ns, uint64_t interval_ns);
/// A signalfd for these signals (the caller blocks them in every thread).
int cswiftlet_signalfd(const int *signals, int count);
/// Reads one signal from a signalfd: its number, or -errno (-EAGAIN: none).
int cswiftlet_signalfd_read(int fd);
/// accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK).
int cswiftlet_accept(int fd);
/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): 0, or -errno.
int cswiftlet_punch_hole(int fd, long long offset, long long length);
/// Atomic read-modify-write of a 32-bit word shared with the guest (its event-channel bitmaps):
/// the old value.
static inline uint32_t cswiftlet_atomic_or32(void *word, uint32_t bits) { return __atomic_fetch_or((uint32_t *)word, bits, __ATOMIC_SEQ_CST); }
static inline uint32_t cswiftlet_atomic_and32(void *word, uint32_t bits) { return __atomic_fetch_and((uint32_t *)word, bits, __ATOMIC_SEQ_CST); }
/// Attaches to TAP device `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking, no offloads)
/// with a virtio-net header of `vnet_header_size` bytes on every frame: the fd, or -errno.
int cswiftlet_tap_open(const char *name, int vnet_header_size);
/// Sets IFF_UP on interface `name` in the calling thread's network namespace: 0, or -errno.
int cswiftlet_link_up(const char *name);
/// A raw packet socket (AF_PACKET, every protocol) bound to interface `name`: the host side of a
/// TAP device, for tests. The fd, or -errno.
int cswiftlet_packet_socket(const char *name);
#endif
