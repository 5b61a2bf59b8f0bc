// The VMM's syscall filter (raw seccomp BPF, x86-64). See Sources/VMM/Seccomp.swift and the
// README's Security section for why each call is allowed.
#include "cswiftlet_system.h"
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>

// What the run loop, device emulation, the main loop (epoll: the console, signals through a
// signalfd, the watchdog's and the console's timerfds), teardown and the end-of-run report need
// once the VM is built. No new processes, threads, sockets, mappings of files or privilege changes.
static const int allowed[] = {
    SYS_read, SYS_write, SYS_writev, SYS_pread64, SYS_close, SYS_openat, SYS_newfstatat, SYS_fstat,
    SYS_lseek, SYS_fcntl, SYS_poll, SYS_ppoll, SYS_ioctl,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk, SYS_mincore,
    SYS_futex, SYS_sched_yield, SYS_sched_getaffinity, SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime,
    SYS_gettid, SYS_getpid, SYS_tgkill, SYS_tkill,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigtimedwait, SYS_sigaltstack,
    SYS_getrandom, SYS_sysinfo, SYS_readlink, SYS_exit, SYS_exit_group, SYS_restart_syscall,
    SYS_rseq, SYS_set_robust_list,   // what glibc does as a thread that was created just before starts
    SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_ctl, SYS_timerfd_create, SYS_timerfd_settime,
    // virtio workers: block I/O straight to and from guest memory, flush, discard and
    // write-zeroes, frames to and from a TAP device, vsock's Unix sockets.
    SYS_preadv, SYS_pwritev, SYS_pwrite64, SYS_readv, SYS_fdatasync, SYS_fallocate,
    SYS_accept4, SYS_recvfrom, SYS_sendto, SYS_recvmsg, SYS_sendmsg, SYS_shutdown,
};

// What the API server needs on top: removing its socket at exit, and PUT /snapshot/create's
// files (the memory file sized with ftruncate, the state written to a temporary file, synced and
// renamed over the target). (Accepting and serving its connections uses the calls vsock's
// sockets need too, in the list above.) Still no new sockets, connections out, processes or threads.
static const int api_allowed[] = {
    SYS_unlink, SYS_ftruncate, SYS_fsync, SYS_rename,
};

int cswiftlet_seccomp_allowed_count(void) { return (int)(sizeof allowed / sizeof allowed[0]); }
int cswiftlet_seccomp_allowed_at(int index) { return allowed[index]; }
int cswiftlet_seccomp_api_allowed_count(void) { return (int)(sizeof api_allowed / sizeof api_allowed[0]); }
int cswiftlet_seccomp_api_allowed_at(int index) { return api_allowed[index]; }

static void on_sigsys(int signal, siginfo_t *info, void *context) {
    (void)signal; (void)context;
    char text[160] = "swiftlet: seccomp: the VMM made system call ";
    size_t length = strlen(text);
    char digits[12];
    int n = 0;
    unsigned number = (unsigned)info->si_syscall;
    do { digits[n++] = (char)('0' + number % 10); number /= 10; } while (number && n < 11);
    while (n) text[length++] = digits[--n];
    const char *tail = ", which its filter forbids; rerun with --no-seccomp to debug\n";
    size_t tailLength = strlen(tail);
    memcpy(text + length, tail, tailLength);
    length += tailLength;
    ssize_t ignored = write(2, text, length);
    (void)ignored;
    _exit(1);
}

void cswiftlet_unblock_sigsys(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSYS);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SWIFTLET_SANITIZED 1
#endif
#endif

int cswiftlet_sanitized_build(void) {
#ifdef SWIFTLET_SANITIZED
    return 1;
#else
    return 0;
#endif
}

int cswiftlet_seccomp_install(int serve_api, int unix_connect) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &action, NULL) != 0) return -errno;
    cswiftlet_unblock_sigsys();

    enum { base_count = sizeof allowed / sizeof allowed[0], api_count = sizeof api_allowed / sizeof api_allowed[0] };
    int count = 0;
    int calls[base_count + api_count + 2];
    for (int k = 0; k < base_count; k++) calls[count++] = allowed[k];
    for (int k = 0; serve_api && k < api_count; k++) calls[count++] = api_allowed[k];
    if (unix_connect) { calls[count++] = SYS_connect; calls[count++] = SYS_unlink; }   // and vsock's socket file at exit
    // vsock connects to the host's Unix sockets as the guest asks: socket(AF_UNIX, ...) only.
    const int extra = unix_connect ? 3 : 0;
    // Layout: [0-4] architecture and x32 checks, [5-7] prctl(PR_SET_NAME) only (threads name
    // themselves as they start), [8, 8 + extra) socket(AF_UNIX) only, [8 + extra, + count) one
    // test per allowed call, then TRAP (everything else) and ALLOW (where every match jumps). A
    // jump's offset counts from the next instruction.
    struct sock_filter program[base_count + api_count + 2 + 13];
    int i = 0;
    // Anything but x86-64 (the i386 entry point included) is killed outright.
    program[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    program[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    program[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, count + extra + 3, 0);   // x32: TRAP
    program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 2);
    program[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NAME, count + extra + 1, count + extra);
    if (unix_connect) {
        program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 2);
        program[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
        program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, count + 1, count);
    }
    for (int k = 0; k < count; k++) {
        program[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)calls[k], (unsigned char)(count - k), 0);
    }
    program[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP);
    program[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = { .len = (unsigned short)i, .filter = program };

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    long result = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
    if (result < 0) return -errno;
    if (result > 0) return -ESRCH;   // TSYNC: a thread (id `result`) could not be synchronised
    return 0;
}
