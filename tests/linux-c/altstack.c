/* sigaltstack as Linux does it: the state at start (SS_DISABLE), bad
 * arguments (EINVAL, ENOMEM below MINSIGSTKSZ, EFAULT), a handler with
 * SA_ONSTACK running on the alternate stack (its locals there,
 * sigaltstack saying SS_ONSTACK, EPERM for a change while on it, the
 * frame's uc_stack), a nested handler further down the same stack, a
 * handler without SA_ONSTACK on the normal stack, SS_AUTODISARM, the
 * state a forked child inherits, and the classic: a stack overflow
 * caught by a SIGSEGV handler on the alternate stack. Prints only what does not depend
 * on the machine, between =BEGIN= and =END=; tests/linux.rs compares
 * the guest's output with host Linux's. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#define ALT_SIZE (64 * 1024)
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* linux/signal.h; glibc does not name it */
#endif

static char *alt;
static volatile int depth;

static const char *yes(int b) { return b ? "yes" : "no"; }

static int on_alt(const void *p)
{
	return (uintptr_t)p >= (uintptr_t)alt && (uintptr_t)p < (uintptr_t)alt + ALT_SIZE;
}

static void show(const char *what, int r, const stack_t *s)
{
	if (r < 0) {
		printf("  %s: %s\n", what, strerrorname_np(errno));
		return;
	}
	printf("  %s: flags %#x, size %zu, sp %s\n", what, (unsigned)s->ss_flags, s->ss_size,
	       s->ss_sp == NULL ? "NULL" : s->ss_sp == alt ? "the buffer" : "elsewhere");
}

static uintptr_t inner_local;

static void on_usr2(int sig)
{
	int local;
	(void)sig;
	inner_local = (uintptr_t)&local;
}

static void on_usr1(int sig, siginfo_t *si, void *ucv)
{
	int local;
	ucontext_t *uc = ucv;
	stack_t cur, other;
	int first = depth++ == 0;
	(void)sig;
	(void)si;
	printf("  handler: its locals on the alternate stack: %s\n", yes(on_alt(&local)));
	int r = sigaltstack(NULL, &cur);
	show("sigaltstack in the handler", r, &cur);
	show("uc_stack", 0, &uc->uc_stack);
	if (!first)
		return;
	other.ss_sp = alt;
	other.ss_size = ALT_SIZE;
	other.ss_flags = 0;
	r = sigaltstack(&other, NULL);
	printf("  changing it there: %s\n", r < 0 ? strerrorname_np(errno) : "ok");
	other.ss_flags = SS_DISABLE;
	r = sigaltstack(&other, NULL);
	printf("  disabling it there: %s\n", r < 0 ? strerrorname_np(errno) : "ok");
	raise(SIGUSR2);
	printf("  nested handler on the alternate stack, below this one: %s\n",
	       yes(on_alt((void *)inner_local) && inner_local < (uintptr_t)&local));
}

static void on_usr1_plain(int sig)
{
	int local;
	(void)sig;
	printf("  handler without SA_ONSTACK on the alternate stack: %s\n", yes(on_alt(&local)));
}

static volatile int overflow_depth;
static volatile uintptr_t last_frame;

static void on_overflow(int sig, siginfo_t *si, void *ucv)
{
	int local;
	(void)ucv;
	printf("  SIGSEGV %s, on the alternate stack %s, after deep recursion %s\n",
	       sig == SIGSEGV ? "caught" : "not caught", yes(on_alt(&local)),
	       yes(overflow_depth > 1000));
	printf("  si_code SEGV_MAPERR %s, si_addr below the stack in use %s\n",
	       yes(si->si_code == SEGV_MAPERR), yes((uintptr_t)si->si_addr < last_frame));
	fflush(stdout);
	_exit(0);
}

/* Recurse until the stack runs out (each level keeps a page-sized
 * buffer live, so no call is a tail call). */
#pragma GCC diagnostic ignored "-Winfinite-recursion"
static int recurse(int n)
{
	volatile char pad[4096];
	pad[0] = (char)n;
	overflow_depth = n;
	last_frame = (uintptr_t)pad;
	return recurse(n + 1) + pad[0];
}

int main(void)
{
	stack_t s, old;
	struct sigaction sa;
	int r;

	printf("=BEGIN=\n");
	alt = malloc(ALT_SIZE);
	r = sigaltstack(NULL, &old);
	show("at start", r, &old);

	printf("bad arguments:\n");
	s.ss_sp = alt;
	/* The kernel's MINSIGSTKSZ (glibc's is the CPU's sysconf value). */
	s.ss_size = 2048 - 1;
	s.ss_flags = 0;
	show("size MINSIGSTKSZ - 1", sigaltstack(&s, NULL), &s);
	s.ss_size = ALT_SIZE;
	s.ss_flags = 0x10;
	show("flags 0x10", sigaltstack(&s, NULL), &s);
	show("ss at a bad address", sigaltstack((stack_t *)8, NULL), &s);
	show("oss at a bad address", sigaltstack(NULL, (stack_t *)8), &s);
	r = sigaltstack(NULL, &old);
	show("unchanged", r, &old);

	printf("SA_ONSTACK:\n");
	s.ss_sp = alt;
	s.ss_size = ALT_SIZE;
	s.ss_flags = 0;
	r = sigaltstack(&s, &old);
	show("set (the old one)", r, &old);
	r = sigaltstack(NULL, &old);
	show("now", r, &old);
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR2, &sa, NULL);
	raise(SIGUSR1);
	r = sigaltstack(NULL, &old);
	show("after the handler", r, &old);

	printf("without SA_ONSTACK:\n");
	sa.sa_handler = on_usr1_plain;
	sa.sa_flags = 0;
	sigaction(SIGUSR1, &sa, NULL);
	raise(SIGUSR1);

	printf("in a forked child:\n");
	fflush(stdout);
	pid_t c = fork();
	if (c == 0) {
		r = sigaltstack(NULL, &old);
		show("inherited", r, &old);
		exit(0);
	}
	waitpid(c, NULL, 0);

	printf("SS_AUTODISARM:\n");
	s.ss_flags = SS_ONSTACK | SS_AUTODISARM;
	r = sigaltstack(&s, NULL);
	show("set", r, &s);
	r = sigaltstack(NULL, &old);
	show("now", r, &old);
	depth = 1;
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	raise(SIGUSR1);
	r = sigaltstack(NULL, &old);
	show("after the handler", r, &old);

	printf("a stack overflow:\n");
	fflush(stdout);
	c = fork();
	if (c == 0) {
		stack_t os = { .ss_sp = malloc(ALT_SIZE), .ss_size = ALT_SIZE, .ss_flags = 0 };
		struct sigaction osa;
		alt = os.ss_sp;
		sigaltstack(&os, NULL);
		memset(&osa, 0, sizeof osa);
		osa.sa_sigaction = on_overflow;
		osa.sa_flags = SA_SIGINFO | SA_ONSTACK;
		sigaction(SIGSEGV, &osa, NULL);
		recurse(0);
		exit(1);
	}
	int st;
	waitpid(c, &st, 0);
	printf("  the child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));

	printf("SS_DISABLE:\n");
	s.ss_flags = SS_DISABLE;
	r = sigaltstack(&s, &old);
	show("the old one", r, &old);
	r = sigaltstack(NULL, &old);
	show("now", r, &old);
	raise(SIGUSR1);
	printf("=END=\n");
	return 0;
}
