// epoll, eventfd, timerfd and signalfd for Sources/VMM/EventLoop.swift. struct epoll_event is
// packed on x86-64, which Swift does not import faithfully: these wrappers take its fields apart.
#include "cswiftlet_system.h"
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

int cswiftlet_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cswiftlet_epoll_control(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = events;
    event.data.u64 = data;
    int code = op == 0 ? EPOLL_CTL_ADD : op == 1 ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    return epoll_ctl(epfd, code, fd, &event) == 0 ? 0 : -errno;
}

int cswiftlet_epoll_wait(int epfd, uint64_t *datas, uint32_t *events, int capacity, int timeout) {
    struct epoll_event ready[64];
    if (capacity > 64) capacity = 64;
    int n = epoll_wait(epfd, ready, capacity, timeout);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) { datas[i] = ready[i].data.u64; events[i] = ready[i].events; }
    return n;
}

int cswiftlet_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int cswiftlet_timerfd(uint64_t first_ns, uint64_t interval_ns) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (fd < 0) return -errno;
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (first_ns == 0) first_ns = 1;   // 0 would disarm it
    spec.it_value.tv_sec = (time_t)(first_ns / 1000000000u);
    spec.it_value.tv_nsec = (long)(first_ns % 1000000000u);
    spec.it_interval.tv_sec = (time_t)(interval_ns / 1000000000u);
    spec.it_interval.tv_nsec = (long)(interval_ns % 1000000000u);
    if (timerfd_settime(fd, 0, &spec, NULL) != 0) { int e = errno; close(fd); return -e; }
    return fd;
}

int cswiftlet_signalfd(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int cswiftlet_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n != (ssize_t)sizeof info) return n < 0 ? -errno : -EIO;
    return (int)info.ssi_signo;
}

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/socket.h>
int cswiftlet_accept(int fd) {
    int client = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    return client < 0 ? -errno : client;
}

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): 0, or -errno.
int cswiftlet_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0 ? 0 : -errno;
}
