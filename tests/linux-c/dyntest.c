/* dyntest: a dynamically linked program (plain gcc: PIE, dynamic, the
 * Debian default) for the guest's dynamic linking and file mappings.
 * Prints one line per check, with no addresses, pids or times, so that
 * its output on host Linux and in a K42 guest can be compared byte for
 * byte (tests/linux_dynamic.rs). Modes:
 *   dyntest DIR          everything below, with scratch files in DIR
 *   dyntest child ARGS   what an exec'd child prints
 *   dyntest share N      N processes of this program at once: free memory
 *                        before and with them, and libc's text size
 *   dyntest hold         (share's children) touch libc's text, say so on
 *                        stdout (a pipe), wait for stdin to close
 *   dyntest churn MIB    map, touch and let go of MIB MiB, 4 at a time
 *                        (munmap, or MADV_DONTNEED then munmap) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static char path_buf[512];
static const char *at(const char *dir, const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
    return path_buf;
}

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_file(const char *path, const char *bytes, size_t n) {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, bytes, n) != (ssize_t)n || close(fd) != 0)
        die("write_file");
}

static void basics(const char *dir) {
    printf("hello from a dynamically linked program\n");
    printf("printf: %d %5.2f %s %x %lu\n", 42, 3.14159, "str", 0xbeef, 1UL << 40);
    char *big = malloc(1 << 20);
    if (!big)
        die("malloc");
    memset(big, 'x', 1 << 20);
    size_t sum = 0;
    for (int i = 0; i < 1 << 20; i += 4096)
        sum += big[i];
    free(big);
    printf("malloc 1 MiB: sum %zu\n", sum);
    char *small[100];
    for (int i = 0; i < 100; i++) {
        small[i] = malloc(16 + i * 7);
        snprintf(small[i], 16, "n%d", i);
    }
    printf("small blocks: %s %s\n", small[0], small[99]);
    for (int i = 0; i < 100; i++)
        free(small[i]);
    /* A file written with stdio, read back with read(). */
    FILE *f = fopen(at(dir, "text"), "w");
    if (!f)
        die("fopen");
    for (int i = 0; i < 1000; i++)
        fprintf(f, "line %d\n", i);
    fclose(f);
    struct stat st;
    if (stat(at(dir, "text"), &st) != 0)
        die("stat");
    printf("stdio file: %lld bytes\n", (long long)st.st_size);
    f = fopen(at(dir, "text"), "r");
    char line[64];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n++;
    fclose(f);
    printf("read back: %d lines, last %s", n, line);
    /* dlsym in the already loaded libc. */
    size_t (*len)(const char *) = (size_t (*)(const char *))dlsym(RTLD_DEFAULT, "strlen");
    printf("dlsym strlen: %zu\n", len ? len("twelve chars") : 0);
    fflush(stdout);
}

static void fork_exec(const char *self) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        execl(self, self, "child", "one", "two", (char *)NULL);
        _exit(99);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    printf("exec'd child exited %d\n", WEXITSTATUS(status));
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        printf("forked child (no exec) says hi\n");
        fflush(stdout);
        _exit(5);
    }
    waitpid(pid, &status, 0);
    printf("forked child exited %d\n", WEXITSTATUS(status));
}

/* A file of PAGES pages: page i filled with 'a' + i. */
static int page_file(const char *path, int pages) {
    char buf[PAGE];
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open page file");
    for (int i = 0; i < pages; i++) {
        memset(buf, 'a' + i, PAGE);
        if (write(fd, buf, PAGE) != PAGE)
            die("write page file");
    }
    return fd;
}

static char byte_at(int fd, off_t off) {
    char c = '?';
    if (pread(fd, &c, 1, off) != 1)
        return '!';
    return c;
}

static sigjmp_buf segv_jump;
static volatile void *segv_addr;
static volatile int segv_code;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    segv_addr = si->si_addr;
    segv_code = si->si_code;
    siglongjmp(segv_jump, 1);
}

static char *fix_page;

/* Makes the page writable and returns: the write is made again. */
static void on_segv_fix(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    segv_addr = si->si_addr;
    mprotect(fix_page, PAGE, PROT_READ | PROT_WRITE);
}

static void mappings(const char *dir) {
    /* MAP_PRIVATE: writes stay in the process. */
    int fd = page_file(at(dir, "map"), 4);
    char *p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        die("mmap private");
    printf("private: reads %c %c %c %c\n", p[0], p[PAGE], p[2 * PAGE], p[3 * PAGE + 4095]);
    p[PAGE] = 'X';
    printf("private: wrote X, mapping has %c, file has %c\n", p[PAGE], byte_at(fd, PAGE));
    munmap(p, 4 * PAGE);
    /* At an offset, read-only. */
    p = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE, fd, 2 * PAGE);
    if (p == MAP_FAILED)
        die("mmap offset");
    printf("offset 2 pages: reads %c %c\n", p[0], p[PAGE]);
    munmap(p, 2 * PAGE);
    /* MAP_SHARED: writes reach the file, a fork's child and its writes. */
    char *s = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED)
        die("mmap shared");
    s[10] = 'S';
    printf("shared: wrote S, file has %c\n", byte_at(fd, 10));
    if (pwrite(fd, "W", 1, 3 * PAGE + 5) != 1)
        die("pwrite");
    printf("shared: pwrite W, mapping has %c\n", s[3 * PAGE + 5]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        s[2 * PAGE] = 'C';
        _exit(s[10] == 'S' ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("shared: child saw S: %s, parent sees child's %c, file has %c\n",
           WEXITSTATUS(status) == 0 ? "yes" : "no", s[2 * PAGE], byte_at(fd, 2 * PAGE));
    /* munmap of the middle: the ends stay, the middle faults. */
    if (munmap(s + PAGE, 2 * PAGE) != 0)
        die("munmap middle");
    printf("unmapped the middle: ends read %c %c\n", s[0], s[3 * PAGE]);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    if (sigsetjmp(segv_jump, 1) == 0) {
        volatile char c = s[PAGE + 100];
        (void)c;
        printf("middle: read, no fault\n");
    } else {
        printf("middle: SIGSEGV, si_addr right: %s, code %s\n",
               segv_addr == s + PAGE + 100 ? "yes" : "no",
               segv_code == SEGV_MAPERR ? "SEGV_MAPERR" : "other");
    }
    munmap(s, 4 * PAGE);
    /* mprotect read-only, then a write: SIGSEGV with the address. */
    p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    p[5] = 'p';
    if (mprotect(p, PAGE, PROT_READ) != 0)
        die("mprotect");
    if (sigsetjmp(segv_jump, 1) == 0) {
        p[7] = 'q';
        printf("read-only: written, no fault\n");
    } else {
        printf("read-only: SIGSEGV, si_addr right: %s, code %s, page kept %c\n",
               segv_addr == p + 7 ? "yes" : "no",
               segv_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other", p[5]);
    }
    p[PAGE + 1] = 'w';
    printf("second page still writable: %c\n", p[PAGE + 1]);
    /* A handler that fixes the protection and returns. */
    fix_page = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sa.sa_sigaction = on_segv_fix;
    sigaction(SIGSEGV, &sa, NULL);
    volatile char *v = fix_page;
    v[9] = 'f';
    printf("handler returned: write done %c, si_addr right: %s\n", v[9],
           segv_addr == fix_page + 9 ? "yes" : "no");
    munmap(fix_page, PAGE);
    /* Other faults' signals: a divide error, an invalid opcode. */
    sa.sa_sigaction = on_segv;
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    if (sigsetjmp(segv_jump, 1) == 0) {
        volatile int zero = 0, ten = 10;
        printf("divide by zero: %d, no fault\n", ten / zero);
    } else {
        printf("divide by zero: SIGFPE, code %s\n",
               segv_code == FPE_INTDIV ? "FPE_INTDIV" : "other");
    }
    if (sigsetjmp(segv_jump, 1) == 0) {
        __builtin_trap();
    } else {
        printf("invalid opcode: SIGILL, code %s\n",
               segv_code == ILL_ILLOPN ? "ILL_ILLOPN" : "other");
    }
    /* MADV_DONTNEED: private file pages go back to the file's bytes. */
    p[PAGE] = 'Z';
    int r = madvise(p + PAGE, PAGE, MADV_DONTNEED);
    printf("madvise file page: %d, reads %c %c\n", r, p[PAGE], p[PAGE + 1]);
    munmap(p, 2 * PAGE);
    /* ... anonymous pages read back as zero. */
    char *a = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 7, 3 * PAGE);
    r = madvise(a, 2 * PAGE, MADV_DONTNEED);
    printf("madvise anonymous: %d, reads %d %d %d\n", r, a[0], a[PAGE], a[2 * PAGE]);
    munmap(a, 3 * PAGE);
    /* MAP_FIXED over an anonymous mapping, as ld.so maps segments. */
    a = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 1, 4 * PAGE);
    p = mmap(a + PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, fd, 3 * PAGE);
    printf("fixed over anonymous: same address %s, reads %d %c %d\n",
           p == a + PAGE ? "yes" : "no", a[0], a[PAGE], a[2 * PAGE]);
    munmap(a, 4 * PAGE);
    /* The end of a file: bytes past it in the last page are zero. */
    write_file(at(dir, "short"), "0123456789", 10);
    int sfd = open(at(dir, "short"), O_RDONLY | O_CLOEXEC);
    p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, sfd, 0);
    printf("short file: %.10s then %d %d\n", p, p[10], p[4095]);
    munmap(p, PAGE);
    close(sfd);
    /* Errors as Linux gives them. */
    errno = 0;
    p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 100);
    printf("unaligned offset: %s\n", p == MAP_FAILED && errno == EINVAL ? "EINVAL" : "other");
    int ro = open(at(dir, "map"), O_RDONLY | O_CLOEXEC);
    errno = 0;
    p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
    printf("shared writable of a read-only fd: %s\n",
           p == MAP_FAILED && errno == EACCES ? "EACCES" : "other");
    errno = 0;
    p = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, 12345, 0);
    printf("bad fd: %s\n", p == MAP_FAILED && errno == EBADF ? "EBADF" : "other");
    close(ro);
    close(fd);
    unlink(at(dir, "map"));
    unlink(at(dir, "short"));
    unlink(at(dir, "text"));
}

/* libc's executable segment: its start and size. */
static int find_libc_text(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (!strstr(info->dlpi_name, "libc.so"))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            ((unsigned long *)data)[0] = info->dlpi_addr + ph->p_vaddr;
            ((unsigned long *)data)[1] = ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

static unsigned long libc_text[2];

static int hold(void) {
    dl_iterate_phdr(find_libc_text, libc_text);
    volatile unsigned long sum = 0;
    unsigned long start = libc_text[0] & ~(unsigned long)(PAGE - 1);
    for (unsigned long a = start; a < libc_text[0] + libc_text[1]; a += PAGE)
        sum += *(volatile unsigned char *)a;
    if (write(1, "r", 1) != 1)
        return 1;
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}

static unsigned long free_kib(void) {
    struct sysinfo si;
    sysinfo(&si);
    return (unsigned long)(si.freeram / 1024 * si.mem_unit);
}

static int share(const char *self, int n) {
    dl_iterate_phdr(find_libc_text, libc_text);
    int go[2];
    if (pipe2(go, O_CLOEXEC) != 0)
        die("pipe");
    pid_t pids[64];
    unsigned long before = free_kib();
    for (int i = 0; i < n && i < 64; i++) {
        int ready[2];
        if (pipe(ready) != 0)
            die("pipe");
        fflush(stdout);
        pids[i] = fork();
        if (pids[i] == 0) {
            dup2(go[0], 0);
            dup2(ready[1], 1);
            close(ready[0]);
            close(ready[1]);
            execl(self, self, "hold", (char *)NULL);
            _exit(99);
        }
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) != 1)
            die("child not ready");
        close(ready[0]);
        if (i == 0)
            printf("share: one process: %lu KiB\n", before - free_kib());
    }
    unsigned long with = free_kib();
    close(go[1]);
    close(go[0]);
    for (int i = 0; i < n && i < 64; i++)
        waitpid(pids[i], NULL, 0);
    printf("share: %d processes: %lu KiB, libc text %lu KiB\n", n, before - with,
           libc_text[1] / 1024);
    return 0;
}

static int churn(int mib) {
    for (int round = 0; round < mib / 4; round++) {
        char *a = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED)
            die("mmap");
        memset(a, round, 4 << 20);
        if (round % 2 == 1 && madvise(a, 4 << 20, MADV_DONTNEED) != 0)
            die("madvise");
        if (munmap(a, 4 << 20) != 0)
            die("munmap");
    }
    printf("churn: %d MiB mapped, touched and let go\n", mib / 4 * 4);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "child") == 0) {
        printf("child: argc %d:", argc);
        for (int i = 1; i < argc; i++)
            printf(" %s", argv[i]);
        printf("\n");
        return 7;
    }
    if (argc >= 2 && strcmp(argv[1], "hold") == 0)
        return hold();
    if (argc >= 3 && strcmp(argv[1], "churn") == 0)
        return churn(atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "share") == 0)
        return share(argv[0], atoi(argv[2]));
    if (argc < 2) {
        fprintf(stderr, "usage: dyntest DIR | share N\n");
        return 2;
    }
    printf("=BEGIN=\n");
    fflush(stdout);
    basics(argv[1]);
    fork_exec(argv[0]);
    mappings(argv[1]);
    printf("=END=\n");
    return 0;
}
