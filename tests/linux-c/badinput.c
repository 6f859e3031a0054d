/* badinput: Linux system calls given bad pointers, and execve of files
 * that are not programs. Prints one line per call: the call, what it
 * was given, and its result (a value or an errno name), so that the
 * output on host Linux and in a K42 guest can be compared byte for byte.
 * Build: gcc -static -O2 (tests/linux.rs runs it on both). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <ucontext.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case EFAULT: return "EFAULT";
    case ENOEXEC: return "ENOEXEC";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ERANGE: return "ERANGE";
    case ECHILD: return "ECHILD";
    default: return "E?";
    }
}

/* One raw system call (no libc wrapper checks), its result printed. */
static long show(const char *what, const char *arg, long r) {
    if (r < 0 && r > -4096)
        printf("%s(%s) = -1 %s\n", what, arg, ename((int)-r));
    else
        printf("%s(%s) = %s\n", what, arg, r == 0 ? "0" : "ok");
    fflush(stdout);
    return r;
}


static long call(long n, long a, long b, long c, long d) {
    long r = syscall(n, a, b, c, d);
    return r < 0 ? -errno : r;
}

static void write_file(const char *path, const void *data, size_t len, int mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
        perror(path);
        exit(2);
    }
    close(fd);
    chmod(path, mode);
}

/* Exec `path` in a child; print execve's errno (the child reports it
 * as its exit status). */
static void try_exec(const char *what, const char *path) {
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)path, NULL};
        char *envp[] = {NULL};
        execve(path, argv, envp);
        _exit(errno);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st))
        printf("execve(%s) = -1 %s\n", what, ename(WEXITSTATUS(st)));
    else
        printf("execve(%s) = signal\n", what);
    fflush(stdout);
}

/* The scratch directory (its name is never printed). */
static char dir[64];

static const char *at(const char *name) {
    static char path[8][128];
    static int k;
    k = (k + 1) % 8;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

/* badinput --null N: the time of N getuid (served in the personality
 * alone) and N getppid calls, ns each: the cost of a null Linux call. */
static int null_calls(long n) {
    long nrs[] = {SYS_getuid, SYS_getppid};
    const char *names[] = {"getuid", "getppid"};
    for (int k = 0; k < 2; k++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < n; i++)
            syscall(nrs[k]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
        printf("%s: %lld ns per call (%ld calls)\n", names[k], ns / n, n);
    }
    return 0;
}

/* Set every MXCSR bit in the frame's FP state. */
static void bad_mxcsr(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    (void)sig;
    (void)si;
    uc->uc_mcontext.fpregs->mxcsr = 0xffffffff;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--null") == 0)
        return null_calls(atol(argv[2]));
    printf("=BEGIN=\n");
    snprintf(dir, sizeof dir, "/tmp/badinput.%d", (int)getpid());
    /* NULL, the kernel half, unmapped (a page unmapped after mapping),
     * and a non-canonical address. */
    char *unmapped = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(unmapped, 4096);
    struct { const char *name; long p; } bad[] = {
        {"NULL", 0},
        {"kernel", (long)0xffff800000001000UL},
        {"unmapped", (long)unmapped},
        {"noncanonical", (long)0x8000000000000000UL},
        /* Where K42 maps the Linux personality in every Linux process:
         * nothing a program may name (unmapped on the host). */
        {"personality", (long)0x600000001000UL},
    };
    int p[2];
    if (pipe(p) != 0)
        return 2;
    write(p[1], "abc", 3);
    int devnull = open("/dev/null", O_RDONLY);
    int zero = open("/dev/zero", O_RDONLY);
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *n = bad[i].name;
        long b = bad[i].p;
        show("read(pipe)", n, call(SYS_read, p[0], b, 3, 0));
        show("read(zero)", n, call(SYS_read, zero, b, 16, 0));
        show("read(null)", n, call(SYS_read, devnull, b, 16, 0));
        show("write(pipe)", n, call(SYS_write, p[1], b, 3, 0));
        show("write(stdout)", n, call(SYS_write, 1, b, 3, 0));
        show("stat(path)", n, call(SYS_stat, b, (long)&(struct stat){0}, 0, 0));
        show("stat(buf)", n, call(SYS_stat, (long)"/", b, 0, 0));
        show("fstat", n, call(SYS_fstat, 0, b, 0, 0));
        show("open", n, call(SYS_open, b, O_RDONLY, 0, 0));
        show("openat", n, call(SYS_openat, AT_FDCWD, b, O_RDONLY, 0));
        show("getcwd", n, call(SYS_getcwd, b, 4096, 0, 0));
        show("uname", n, call(SYS_uname, b, 0, 0, 0));
        show("pipe", n, call(SYS_pipe, b, 0, 0, 0));
        show("rt_sigaction(act)", n, call(SYS_rt_sigaction, SIGUSR1, b, 0, 8));
        show("rt_sigaction(oact)", n, call(SYS_rt_sigaction, SIGUSR1, 0, b, 8));
        show("rt_sigprocmask(set)", n, call(SYS_rt_sigprocmask, SIG_BLOCK, b, 0, 8));
        show("rt_sigprocmask(oset)", n, call(SYS_rt_sigprocmask, SIG_BLOCK, 0, b, 8));
        show("clock_gettime", n, call(SYS_clock_gettime, CLOCK_MONOTONIC, b, 0, 0));
        show("nanosleep", n, call(SYS_nanosleep, b, 0, 0, 0));
        show("chdir", n, call(SYS_chdir, b, 0, 0, 0));
        show("mkdir", n, call(SYS_mkdir, b, 0755, 0, 0));
        show("unlink", n, call(SYS_unlink, b, 0, 0, 0));
        show("access", n, call(SYS_access, b, F_OK, 0, 0));
        show("readlink(path)", n, call(SYS_readlink, b, (long)(char[64]){0}, 64, 0));
        show("readlink(buf)", n, call(SYS_readlink, (long)"/bin/sh", b, 64, 0));
        show("writev(iov)", n, call(SYS_writev, 1, b, 1, 0));
        show("readv(iov)", n, call(SYS_readv, devnull, b, 1, 0));
        show("poll", n, call(SYS_poll, b, 1, 0, 0));
        show("getrandom", n, call(SYS_getrandom, b, 8, 0, 0));
        show("execve(path)", n, call(SYS_execve, b, 0, 0, 0));
        if (b != 0) /* a NULL argv is an empty one */
            show("execve(argv)", n, call(SYS_execve, (long)"/bin/sh", b, 0, 0));
        show("prlimit64", n, call(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, b));
        pid_t c = fork();
        if (c == 0)
            _exit(7);
        show("wait4(status)", n, call(SYS_wait4, c, b, 0, 0));
        show("wait4(again)", n, call(SYS_wait4, c, 0, 0, 0));
    }
    /* Still well after all that. */
    chdir("/");
    char cwd[256];
    show("getcwd(good)", "buf", call(SYS_getcwd, (long)cwd, sizeof cwd, 0, 0));
    printf("cwd %s\n", cwd);

    /* execve on files that are not programs. */
    mkdir(dir, 0755);
    write_file(at("text"), "just text\n", 10, 0755);
    static unsigned char elf32[64] = {0x7f, 'E', 'L', 'F', 1, 1, 1, 0};
    elf32[16] = 2;  /* ET_EXEC */
    elf32[18] = 3;  /* EM_386 */
    elf32[20] = 1;  /* EV_CURRENT */
    elf32[42] = 56; /* e_phentsize: not a 32-bit program header's size */
    write_file(at("elf32"), elf32, sizeof elf32, 0755);
    /* This program's own first bytes: a truncated 64-bit ELF. */
    static unsigned char self[4096];
    int fd = open("/proc/self/exe", O_RDONLY);
    ssize_t got = fd < 0 ? -1 : read(fd, self, sizeof self);
    if (got != (ssize_t)sizeof self)
        return 2;
    close(fd);
    write_file(at("trunc10"), self, 10, 0755);
    write_file(at("trunc100"), self, 100, 0755);
    /* A PT_INTERP naming a missing interpreter: this program's first
     * program header made one. */
    static unsigned char dyn[4096];
    memcpy(dyn, self, sizeof dyn);
    unsigned long phoff;
    unsigned short phnum;
    memcpy(&phoff, dyn + 32, 8);
    memcpy(&phnum, dyn + 56, 2);
    /* Make the first program header a PT_INTERP whose path lies at
     * 3000 in the file. */
    unsigned char *ph = dyn + phoff;
    static const char interp[] = "/lib64/k42-no-such-ld.so";
    unsigned int type = 3;
    unsigned long off = 3000, size = sizeof interp;
    memcpy(ph, &type, 4);
    memcpy(ph + 8, &off, 8);
    memcpy(ph + 32, &size, 8);
    memcpy(dyn + 3000, interp, sizeof interp);
    write_file(at("nointerp"), dyn, sizeof dyn, 0755);
    /* The same, cut inside the interpreter's path. */
    write_file(at("interpcut"), dyn, 3010, 0755);
    try_exec("text", at("text"));
    try_exec("elf32", at("elf32"));
    try_exec("trunc10", at("trunc10"));
    try_exec("trunc100", at("trunc100"));
    try_exec("nointerp", at("nointerp"));
    try_exec("interpcut", at("interpcut"));
    try_exec("missing", at("missing"));
    unlink(at("text"));
    unlink(at("elf32"));
    unlink(at("trunc10"));
    unlink(at("trunc100"));
    unlink(at("nointerp"));
    unlink(at("interpcut"));
    rmdir(dir);

    /* A signal frame whose FP state sets reserved MXCSR bits: SIGSEGV
     * at rt_sigreturn, as Linux refuses it. */
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = bad_mxcsr;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGUSR1, &sa, NULL);
        raise(SIGUSR1);
        printf("a bad MXCSR in a signal frame: survived\n");
        exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    if (WIFSIGNALED(st))
        printf("a bad MXCSR in a signal frame: signal %d\n", WTERMSIG(st));
    else
        printf("a bad MXCSR in a signal frame: exit %d\n", WEXITSTATUS(st));
    printf("=END=\n");
    return 0;
}
