/* fuzz: random Linux system calls with random arguments, one child per
 * CPU, for a bounded time. Usage: fuzz [SECONDS [SEED]]. The seed is
 * printed so that a run can be replayed. Each child issues calls with
 * random numbers (Linux's x86_64 range and a little past it) and random
 * arguments: small integers, pointers into its own memory, NULL, kernel
 * addresses, addresses in K42's Linux personality, non-canonical and
 * arbitrary values. Only calls that would
 * end the experiment trivially are left out: signals to other processes
 * (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
 * pidfd_send_signal). A child that forks ends its own child at once; a
 * child that dies (exit, a fault, a signal) is replaced until the time
 * is up; one that has run for a second is killed (it may be blocked for
 * good) and replaced. At the end the parent kills and reaps every child
 * and exits 0. Half the children fuzz from a second thread too
 * (pthread_create) in the same address space. Build: gcc -static
 * -pthread -O2. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 64
#define CHILD_LIFE_NS 1000000000LL

/* Each thread's own stream. */
static __thread uint64_t state;

static uint64_t rnd(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state * 0x2545f4914f6cdd1dULL;
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static unsigned char heap[4 * 4096] __attribute__((aligned(4096)));

static long arg(void) {
    static const char *names[] = {"f", "d", "d/f", "g", ".", "x", "", "l"};
    unsigned char stack[256];
    switch (rnd() % 11) {
    case 10: return (long)(0x600000000000ULL + rnd() % 0x40000); /* K42's personality */
    case 0: return rnd() % 8;
    case 1: return (long)(rnd() % 4096) - 2048;
    case 2: return (long)(heap + rnd() % sizeof heap);
    case 3: return (long)heap + (rnd() % 4) * 4096;
    case 4: return 0;
    case 5: return (long)(0xffff800000000000ULL + (rnd() & 0x7fffffffffffULL));
    case 6: return (long)rnd();
    case 7: return (long)names[rnd() % 8];
    case 8: return (long)(1ULL << (rnd() % 64)) - (long)(rnd() % 2);
    default: return (long)(stack + rnd() % sizeof stack);
    }
}

/* Half the calls are among those the K42 personality serves (the rest
 * is mostly ENOSYS there). */
static const long served[] = {
    SYS_read, SYS_write, SYS_open, SYS_close, SYS_stat, SYS_fstat, SYS_lstat, SYS_poll,
    SYS_lseek, SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction,
    SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_ioctl, SYS_pread64, SYS_pwrite64, SYS_readv,
    SYS_writev, SYS_access, SYS_pipe, SYS_select, SYS_sched_yield, SYS_madvise, SYS_dup,
    SYS_dup2, SYS_pause, SYS_nanosleep, SYS_getpid, SYS_fork, SYS_vfork, SYS_clone,
    SYS_execve, SYS_exit, SYS_wait4, SYS_uname, SYS_fcntl, SYS_getdents64, SYS_getcwd,
    SYS_chdir, SYS_rename, SYS_mkdir, SYS_rmdir, SYS_link, SYS_unlink, SYS_symlink,
    SYS_readlink, SYS_chmod, SYS_fchmod, SYS_chown, SYS_fchown, SYS_umask, SYS_gettimeofday,
    SYS_getrlimit, SYS_getuid, SYS_getppid, SYS_getpgrp, SYS_setsid, SYS_setpgid,
    SYS_getpgid, SYS_getsid, SYS_rt_sigpending, SYS_rt_sigsuspend, SYS_arch_prctl,
    SYS_prctl, SYS_time, SYS_set_tid_address, SYS_clock_gettime, SYS_clock_nanosleep,
    SYS_exit_group, SYS_openat, SYS_mkdirat, SYS_newfstatat, SYS_unlinkat, SYS_renameat,
    SYS_renameat2, SYS_linkat, SYS_symlinkat, SYS_readlinkat, SYS_fchmodat, SYS_fchownat,
    SYS_faccessat, SYS_pselect6, SYS_ppoll, SYS_utimensat, SYS_dup3, SYS_pipe2,
    SYS_prlimit64, SYS_getrandom, SYS_sched_getaffinity, SYS_gettid, SYS_faccessat2,
    SYS_futex, SYS_clone3, SYS_sched_setaffinity, SYS_set_robust_list,
};

static int excluded(long n) {
    return n == SYS_kill || n == SYS_tkill || n == SYS_tgkill || n == SYS_rt_sigqueueinfo ||
           n == SYS_rt_tgsigqueueinfo || n == 424 /* pidfd_send_signal */;
}

/* splitmix64: every seed its own stream (never 0). */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return (x ^ (x >> 31)) | 1;
}

/* Random calls until the deadline (a forked grandchild ends at once). */
static void fuzz_calls(long long deadline) {
    for (unsigned long calls = 0;; calls++) {
        if ((calls & 15) == 0 && now_ns() >= deadline)
            _exit(0);
        long n = rnd() % 2 ? served[rnd() % (sizeof served / sizeof served[0])]
                 : rnd() % 16 == 0 ? (long)(rnd() % 512)
                                   : (long)(rnd() % 335);
        if (excluded(n))
            continue;
        long a[6];
        for (int k = 0; k < 6; k++)
            a[k] = arg();
        long r = syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (r == 0 && (n == SYS_fork || n == SYS_vfork || n == SYS_clone || n == SYS_clone3))
            _exit(0);
    }
}

struct second {
    uint64_t seed;
    long long deadline;
};

static void *second_thread(void *p) {
    struct second *s = p;
    state = mix(s->seed);
    fuzz_calls(s->deadline);
    return NULL;
}

static void child(int slot, uint64_t seed, long long deadline) {
    state = mix(seed);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    char dir[32];
    snprintf(dir, sizeof dir, "/tmp/fuzz%d", slot);
    mkdir(dir, 0755);
    chdir(dir);
    for (unsigned i = 0; i < sizeof heap; i++)
        heap[i] = (unsigned char)rnd();
    /* Half the children fuzz from two threads (futexes, unmaps and
     * exits racing each other in one address space). */
    static struct second s;
    pthread_t t;
    if (rnd() % 2) {
        s.seed = seed * 31 + 7;
        s.deadline = deadline;
        pthread_create(&t, NULL, second_thread, &s);
    }
    fuzz_calls(deadline);
}

int main(int argc, char **argv) {
    long seconds = argc > 1 ? atol(argv[1]) : 3;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)now_ns();
    cpu_set_t cpus;
    int ncpu = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > MAX_CHILDREN)
        ncpu = MAX_CHILDREN;
    printf("fuzz: seed %llu, %d children, %ld s\n", (unsigned long long)seed, ncpu, seconds);
    fflush(stdout);
    long long deadline = now_ns() + seconds * 1000000000LL;
    pid_t pid[MAX_CHILDREN] = {0};
    long long born[MAX_CHILDREN] = {0};
    unsigned long spawned = 0, exited = 0, signaled = 0, killed = 0;
    while (now_ns() < deadline) {
        for (int s = 0; s < ncpu; s++) {
            if (pid[s] != 0)
                continue;
            uint64_t cseed = seed ^ (spawned + 1) * 0x9e3779b97f4a7c15ULL;
            spawned++;
            pid_t c = fork();
            if (c == 0)
                child(s, cseed, deadline);
            if (c < 0) {
                perror("fork");
                break;
            }
            pid[s] = c;
            born[s] = now_ns();
        }
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w > 0) {
            for (int s = 0; s < ncpu; s++)
                if (pid[s] == w)
                    pid[s] = 0;
            if (WIFSIGNALED(st))
                signaled++;
            else
                exited++;
            continue;
        }
        struct timespec t = {0, 5000000};
        nanosleep(&t, NULL);
        for (int s = 0; s < ncpu; s++)
            if (pid[s] != 0 && now_ns() - born[s] > CHILD_LIFE_NS) {
                kill(pid[s], SIGKILL);
                killed++;
                born[s] = now_ns();
            }
    }
    for (int s = 0; s < ncpu; s++)
        if (pid[s] != 0)
            kill(pid[s], SIGKILL);
    int st;
    while (waitpid(-1, &st, 0) > 0 || errno == EINTR)
        ;
    printf("fuzz: done: %lu children, %lu exited, %lu signalled, %lu killed\n", spawned, exited,
           signaled, killed);
    return 0;
}
