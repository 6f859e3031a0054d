/* threads: glibc's pthreads on the K42 Linux personality.
 *
 *   threads            every part below, between =BEGIN= and =END=
 *
 * Output that does not depend on the machine (no tids, CPU counts or
 * times are printed, only whether they are right), so that the same
 * static binary prints the same bytes on host Linux and in the guest:
 * a counter under a mutex from N threads (N = CPUs of
 * sched_getaffinity, and 8), a producer/consumer over a condition
 * variable, pthread_join results, distinct thread ids, futex timeouts
 * (relative, absolute on both clocks), EAGAIN, a thread that calls the
 * exit system call while others go on, exit_group from a thread (in a
 * forked child, whose status the parent prints), a default-fatal signal
 * raised by a thread ending them all, copy-on-write copies
 * seen by another thread (TLB shootdown), set_tid_address and
 * clone flags glibc does not use (EINVAL).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ITERATIONS 20000
#define MAX_N 256

static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static pid_t tids[MAX_N];

struct worker {
    int index;
};

static void *count_up(void *arg)
{
    struct worker *w = arg;
    tids[w->index] = (pid_t)syscall(SYS_gettid);
    for (int i = 0; i < ITERATIONS; i++) {
        pthread_mutex_lock(&counter_lock);
        counter++;
        pthread_mutex_unlock(&counter_lock);
    }
    return (void *)(intptr_t)(w->index * 2 + 1);
}

static void counter_test(const char *name, int n)
{
    pthread_t th[MAX_N];
    struct worker w[MAX_N];
    counter = 0;
    for (int i = 0; i < n; i++) {
        w[i].index = i;
        if (pthread_create(&th[i], NULL, count_up, &w[i]) != 0) {
            printf("%s: pthread_create failed\n", name);
            return;
        }
    }
    int joined_ok = 1;
    for (int i = 0; i < n; i++) {
        void *r;
        if (pthread_join(th[i], &r) != 0 || (intptr_t)r != i * 2 + 1)
            joined_ok = 0;
    }
    int distinct = 1;
    pid_t me = getpid();
    for (int i = 0; i < n; i++) {
        if (tids[i] <= 0 || tids[i] == me)
            distinct = 0;
        for (int j = 0; j < i; j++)
            if (tids[i] == tids[j])
                distinct = 0;
    }
    printf("%s: counter %s, joins %s, thread ids distinct and not the pid: %s\n", name,
           counter == (long)n * ITERATIONS ? "right" : "WRONG", joined_ok ? "right" : "WRONG",
           distinct ? "yes" : "no");
}

/* A bounded queue with a condition variable each way. */
#define QSIZE 4
#define ITEMS 2000
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;
static int queue[QSIZE];
static int q_head, q_count;

static void *producer(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&q_lock);
        while (q_count == QSIZE)
            pthread_cond_wait(&q_not_full, &q_lock);
        queue[(q_head + q_count) % QSIZE] = base + i;
        q_count++;
        pthread_cond_signal(&q_not_empty);
        pthread_mutex_unlock(&q_lock);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    long sum = 0;
    for (int i = 0; i < ITEMS; i++) {
        pthread_mutex_lock(&q_lock);
        while (q_count == 0)
            pthread_cond_wait(&q_not_empty, &q_lock);
        sum += queue[q_head];
        q_head = (q_head + 1) % QSIZE;
        q_count--;
        pthread_cond_signal(&q_not_full);
        pthread_mutex_unlock(&q_lock);
    }
    return (void *)sum;
}

static void producer_consumer(void)
{
    pthread_t p[2], c[2];
    pthread_create(&p[0], NULL, producer, (void *)0);
    pthread_create(&p[1], NULL, producer, (void *)100000);
    pthread_create(&c[0], NULL, consumer, NULL);
    pthread_create(&c[1], NULL, consumer, NULL);
    long total = 0;
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(c[i], &r);
        total += (long)r;
        pthread_join(p[i], NULL);
    }
    long want = 2L * ITEMS * (ITEMS + 1) / 2 + 100000L * ITEMS;
    printf("producer/consumer: %d items, sum %s\n", 2 * ITEMS, total == want ? "right" : "WRONG");
}

static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts, uint32_t bits)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, bits);
}

static double now(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *elapsed_ok(double start, clockid_t clock, double want)
{
    double took = now(clock) - start;
    return took >= want - 0.001 && took < want + 2.0 ? "after the time asked" : "at the WRONG time";
}

static void futex_timeouts(void)
{
    uint32_t word = 7;
    struct timespec rel = {0, 100 * 1000 * 1000};
    double t0 = now(CLOCK_MONOTONIC);
    long r = futex(&word, FUTEX_WAIT_PRIVATE, 7, &rel, 0);
    printf("futex wait, relative 100 ms: %s, %s\n", r == -1 && errno == ETIMEDOUT ? "ETIMEDOUT" : "WRONG",
           elapsed_ok(t0, CLOCK_MONOTONIC, 0.1));
    r = futex(&word, FUTEX_WAIT_PRIVATE, 8, &rel, 0);
    printf("futex wait on a changed value: %s\n", r == -1 && errno == EAGAIN ? "EAGAIN" : "WRONG");
    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    t0 = now(CLOCK_MONOTONIC);
    abs.tv_nsec += 50 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000;
    }
    r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 7, &abs, FUTEX_BITSET_MATCH_ANY);
    printf("futex wait_bitset, monotonic deadline in 50 ms: %s, %s\n",
           r == -1 && errno == ETIMEDOUT ? "ETIMEDOUT" : "WRONG", elapsed_ok(t0, CLOCK_MONOTONIC, 0.05));
    clock_gettime(CLOCK_REALTIME, &abs);
    t0 = now(CLOCK_REALTIME);
    abs.tv_nsec += 50 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000;
    }
    r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 7, &abs, FUTEX_BITSET_MATCH_ANY);
    printf("futex wait_bitset, realtime deadline in 50 ms: %s, %s\n",
           r == -1 && errno == ETIMEDOUT ? "ETIMEDOUT" : "WRONG", elapsed_ok(t0, CLOCK_REALTIME, 0.05));
    r = futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 7, NULL, 0);
    printf("futex wait_bitset with no bits: %s\n", r == -1 && errno == EINVAL ? "EINVAL" : "WRONG");
    r = futex((uint32_t *)((char *)&word + 1), FUTEX_WAKE_PRIVATE, 1, NULL, 0);
    printf("futex wake, unaligned: %s\n", r == -1 && errno == EINVAL ? "EINVAL" : "WRONG");
    r = futex(&word, FUTEX_WAKE_PRIVATE, 1, NULL, 0);
    printf("futex wake with no waiter: %ld\n", r);
}

/* A thread that ends itself with the exit system call (not exit_group):
 * the others run on, and pthread_join sees it end (CLONE_CHILD_CLEARTID). */
static volatile int keep_going = 1;

static void *exits_alone(void *arg)
{
    (void)arg;
    syscall(SYS_exit, 0);
    return NULL;
}

static void *keeps_running(void *arg)
{
    (void)arg;
    long spins = 0;
    while (keep_going)
        spins++;
    return (void *)(intptr_t)42;
}

static void thread_exit_test(void)
{
    pthread_t a, b;
    pthread_create(&b, NULL, keeps_running, NULL);
    pthread_create(&a, NULL, exits_alone, NULL);
    int ra = pthread_join(a, NULL);
    keep_going = 0;
    void *rb;
    int rj = pthread_join(b, &rb);
    printf("a thread's exit: joined %s; the other ran on and returned %ld\n", ra == 0 ? "yes" : "no",
           rj == 0 ? (long)(intptr_t)rb : -1L);
}

static void *ends_all(void *arg)
{
    (void)arg;
    usleep(20000);
    exit(3);
}

static void *sleeps(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

/* exit_group from one thread ends every thread of the process. */
static void exit_group_test(void)
{
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("exit_group from a thread: fork failed: %s\n", strerror(errno));
        return;
    }
    if (child == 0) {
        pthread_t a, b;
        pthread_create(&b, NULL, sleeps, NULL);
        pthread_create(&a, NULL, ends_all, NULL);
        pthread_join(b, NULL);
        _exit(99);
    }
    int status;
    waitpid(child, &status, 0);
    printf("exit_group from a thread: child %s %d\n", WIFEXITED(status) ? "exited with" : "ended by",
           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

static void *raises_term(void *arg)
{
    (void)arg;
    usleep(20000);
    raise(SIGTERM);
    return NULL;
}

/* A default-fatal signal raised by one thread (tgkill to itself) ends
 * every thread of the process. */
static void fatal_signal_test(void)
{
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("SIGTERM from a thread: fork failed: %s\n", strerror(errno));
        return;
    }
    if (child == 0) {
        pthread_t a, b;
        pthread_create(&b, NULL, sleeps, NULL);
        pthread_create(&a, NULL, raises_term, NULL);
        pthread_join(b, NULL);
        _exit(99);
    }
    int status;
    waitpid(child, &status, 0);
    printf("SIGTERM raised by a thread: child %s %d\n", WIFSIGNALED(status) ? "ended by signal" : "exited with",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* Copy-on-write under a reading thread: in a forked child (its pages
 * shared with the parent), one thread keeps reading a page while the
 * other writes it, which replaces the page by a copy. A CPU that kept
 * the old translation (no TLB shootdown) would read the old page for
 * ever: the writer gives up after 10 s. 64 pages, one after another. */
#define COW_PAGES 64
static volatile int cow[COW_PAGES][1024];
static volatile int cow_want = -1, cow_loaded = -1, cow_seen = -1, cow_stop;

static void *cow_reader(void *arg)
{
    (void)arg;
    while (!cow_stop) {
        int i = cow_want;
        if (i < 0)
            continue;
        int v = cow[i][0];
        if (cow_loaded != i)
            cow_loaded = i;
        if (v == 1000 + i && cow_seen != i)
            cow_seen = i;
    }
    return NULL;
}

static int wait_for(volatile int *word, int value)
{
    double t0 = now(CLOCK_MONOTONIC);
    while (*word != value) {
        if (now(CLOCK_MONOTONIC) - t0 > 10.0)
            return 0;
        sched_yield();
    }
    return 1;
}

static void cow_test(void)
{
    for (int i = 0; i < COW_PAGES; i++)
        cow[i][0] = i;
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("copy-on-write under a reading thread: fork failed: %s\n", strerror(errno));
        return;
    }
    if (child == 0) {
        pthread_t r;
        pthread_create(&r, NULL, cow_reader, NULL);
        int ok = 1;
        for (int i = 0; i < COW_PAGES && ok; i++) {
            cow_want = i;
            ok = wait_for(&cow_loaded, i);
            cow[i][0] = 1000 + i;
            ok = ok && wait_for(&cow_seen, i);
        }
        cow_stop = 1;
        pthread_join(r, NULL);
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(child, &status, 0);
    printf("copy-on-write of %d pages under a reading thread: %s\n", COW_PAGES,
           WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "every copy seen" : "a STALE page was read");
}

static void misc(void)
{
    int tid = (int)syscall(SYS_set_tid_address, NULL);
    printf("set_tid_address returns the tid, the pid of the main thread: %s\n",
           tid == getpid() && tid == (int)syscall(SYS_gettid) ? "yes" : "no");
    long r = syscall(SYS_clone, CLONE_VM | CLONE_THREAD, (void *)0x1000, NULL, NULL, NULL);
    printf("clone(CLONE_VM|CLONE_THREAD) without CLONE_SIGHAND: %s\n",
           r == -1 && errno == EINVAL ? "EINVAL" : "WRONG");
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    r = sched_setaffinity(0, sizeof set, &set);
    cpu_set_t got;
    sched_getaffinity(0, sizeof got, &got);
    printf("sched_setaffinity to CPU 0: %s\n", r == 0 ? "accepted" : "refused");
    CPU_ZERO(&set);
    r = sched_setaffinity(0, sizeof set, &set);
    printf("sched_setaffinity to no CPU: %s\n", r == -1 && errno == EINVAL ? "EINVAL" : "WRONG");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("=BEGIN=\n");
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    int n = CPU_COUNT(&set);
    if (n > MAX_N)
        n = MAX_N;
    counter_test("one thread per CPU", n);
    counter_test("8 threads", 8);
    producer_consumer();
    futex_timeouts();
    thread_exit_test();
    exit_group_test();
    fatal_signal_test();
    cow_test();
    misc();
    printf("=END=\n");
    return 0;
}
