/*
 * k42-lbench: the measuring program of `k42vmm bench --suite linux`.
 *
 * One static Linux program, the same bytes in the guest (the default
 * image's /bin/k42-lbench) and on the host (k42vmm runs the copy the
 * image holds). Each measurement prints one machine-readable line:
 *
 *   lbench NAME iterations=N ns=T [start_ns=S end_ns=E]
 *
 * T is CLOCK_MONOTONIC time for all N operations; start_ns/end_ns are
 * the monotonic clock at the start and end (the guest's clock is its
 * TSC, so k42vmm can match the interval with a trace). Nothing here
 * judges the figures. Usage:
 *
 *   k42-lbench getppid N            N getppid() calls
 *   k42-lbench bare N               N `syscall`s of number 0x4b42: the
 *                                   k42 personality returns at once (the
 *                                   bare round trip); Linux says ENOSYS
 *   k42-lbench spawn N PATH [NAME]  N fork + execve(PATH, {"true"}) + wait
 *                                   (reported as NAME, default spawn)
 *   k42-lbench pipe MIB             MIB MiB from a child through a pipe
 *   k42-lbench sdet BUSYBOX SCRIPT  fork + exec BUSYBOX sh SCRIPT + wait
 *
 * Exit status 0, or 1 with a one-line error on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The call number the k42 personality answers without serving anything. */
#define BARE_SYSCALL 0x4b42

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "k42-lbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void report(const char *name, uint64_t n, uint64_t t0, uint64_t t1)
{
	printf("lbench %s iterations=%llu ns=%llu start_ns=%llu end_ns=%llu\n", name,
	       (unsigned long long)n, (unsigned long long)(t1 - t0),
	       (unsigned long long)t0, (unsigned long long)t1);
	fflush(stdout);
}

static uint64_t count(const char *text)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || *end || end == text || v == 0) {
		fprintf(stderr, "k42-lbench: '%s' is not a positive count\n", text);
		exit(1);
	}
	return v;
}

/* Wait for `pid`; fail unless it exited with status 0. */
static void reap(pid_t pid, const char *what)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "k42-lbench: %s ended with status %#x\n", what, status);
		exit(1);
	}
}

static void bench_getppid(uint64_t n)
{
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < n; i++)
		(void)syscall(SYS_getppid);
	report("getppid", n, t0, now_ns());
}

static void bench_bare(uint64_t n)
{
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		long r = BARE_SYSCALL;
		__asm__ volatile("syscall" : "+a"(r) : : "rcx", "r11", "memory");
	}
	report("bare", n, t0, now_ns());
}

static void bench_spawn(uint64_t n, const char *path, const char *name)
{
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			char *argv[] = {"true", NULL};
			execv(path, argv);
			_exit(127);
		}
		reap(pid, path);
	}
	report(name, n, t0, now_ns());
}

static void bench_pipe(uint64_t mib)
{
	static char buf[65536];
	int fds[2];
	if (pipe(fds) < 0)
		die("pipe");
	uint64_t total = mib << 20;
	uint64_t t0 = now_ns();
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(fds[0]);
		memset(buf, 'k', sizeof buf);
		for (uint64_t left = total; left > 0;) {
			size_t chunk = left < sizeof buf ? left : sizeof buf;
			ssize_t w = write(fds[1], buf, chunk);
			if (w <= 0)
				_exit(1);
			left -= (uint64_t)w;
		}
		_exit(0);
	}
	close(fds[1]);
	uint64_t got = 0;
	for (;;) {
		ssize_t r = read(fds[0], buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read");
		if (r == 0)
			break;
		got += (uint64_t)r;
	}
	reap(pid, "the pipe writer");
	uint64_t t1 = now_ns();
	close(fds[0]);
	if (got != total) {
		fprintf(stderr, "k42-lbench: pipe: read %llu of %llu bytes\n",
			(unsigned long long)got, (unsigned long long)total);
		exit(1);
	}
	/* One operation: one MiB. */
	report("pipe", mib, t0, t1);
}

static void bench_sdet(const char *busybox, const char *script)
{
	uint64_t t0 = now_ns();
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char *argv[] = {"sh", (char *)script, NULL};
		execv(busybox, argv);
		_exit(127);
	}
	reap(pid, script);
	report("sdet", 1, t0, now_ns());
}

static int usage(void)
{
	fprintf(stderr, "usage: k42-lbench getppid N | bare N | spawn N PATH [NAME] | pipe MIB | "
			"sdet BUSYBOX SCRIPT\n");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "getppid"))
		bench_getppid(count(argv[2]));
	else if (argc == 3 && !strcmp(argv[1], "bare"))
		bench_bare(count(argv[2]));
	else if (argc == 4 && !strcmp(argv[1], "spawn"))
		bench_spawn(count(argv[2]), argv[3], "spawn");
	else if (argc == 5 && !strcmp(argv[1], "spawn"))
		bench_spawn(count(argv[2]), argv[3], argv[4]);
	else if (argc == 3 && !strcmp(argv[1], "pipe"))
		bench_pipe(count(argv[2]));
	else if (argc == 4 && !strcmp(argv[1], "sdet"))
		bench_sdet(argv[2], argv[3]);
	else
		return usage();
	return 0;
}
