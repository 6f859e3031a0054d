/* Stop and continue, as Linux does them: kill -STOP/-CONT of a child
 * with wait4(WUNTRACED|WCONTINUED) statuses and SIGCHLD's si_code and
 * si_status (CLD_STOPPED, CLD_CONTINUED, CLD_KILLED); SIGTSTP caught vs
 * its default; a stopped child that makes no progress (takes no CPU);
 * SIGCONT discarding a pending stop signal; a blocked SIGTSTP stopping
 * the child once unblocked; SA_NOCLDSTOP. Prints only what does not
 * depend on the machine (no pids, no times), between =BEGIN= and =END=;
 * tests/linux.rs compares the guest's output with host Linux's. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t chld_seen, chld_code, chld_status, chld_pid;

static void on_chld(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	chld_code = si->si_code;
	chld_status = si->si_status;
	chld_pid = si->si_pid;
	chld_seen = 1;
}

static const char *code_name(int code)
{
	switch (code) {
	case CLD_EXITED: return "CLD_EXITED";
	case CLD_KILLED: return "CLD_KILLED";
	case CLD_DUMPED: return "CLD_DUMPED";
	case CLD_STOPPED: return "CLD_STOPPED";
	case CLD_CONTINUED: return "CLD_CONTINUED";
	default: return "other";
	}
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* Wait (SIGCHLD blocked but here) for the next SIGCHLD and print it. */
static void expect_chld(pid_t child)
{
	sigset_t none;
	sigemptyset(&none);
	while (!chld_seen)
		sigsuspend(&none);
	chld_seen = 0;
	say("  SIGCHLD: %s status %d from the child: %s\n", code_name(chld_code), chld_status,
	    chld_pid == child ? "yes" : "no");
}

static void describe(const char *what, int st)
{
	if (WIFEXITED(st))
		say("  %s: exited %d\n", what, WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		say("  %s: killed by %s\n", what, sigabbrev_np(WTERMSIG(st)));
	else if (WIFSTOPPED(st))
		say("  %s: stopped by %s (status %#x)\n", what, sigabbrev_np(WSTOPSIG(st)), st);
	else if (WIFCONTINUED(st))
		say("  %s: continued (status %#x)\n", what, st);
	else
		say("  %s: status %#x\n", what, st);
}

static void waitfor(pid_t child, int options, const char *what)
{
	int st = 0;
	pid_t r;
	do
		r = waitpid(child, &st, options);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		say("  %s: nothing to report\n", what);
		return;
	}
	if (r != child) {
		say("  %s: waitpid %d: %s\n", what, (int)r, strerror(errno));
		return;
	}
	describe(what, st);
}

static void nap(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Fork a child in a process group of its own: a group whose members'
 * parent is in another group of the session is not orphaned, so the
 * terminal stop signals (SIGTSTP) stop it. Linux discards them for an
 * orphaned group, which this program's own group is when it runs as a
 * session leader or under a backgrounded harness. */
static pid_t fork_grouped(void)
{
	pid_t c = fork();
	if (c == 0)
		setpgid(0, 0);
	else if (c > 0)
		setpgid(c, c);
	return c;
}

static pid_t child_pausing(void)
{
	pid_t c = fork_grouped();
	if (c == 0) {
		for (;;)
			pause();
	}
	return c;
}

/* The caught-SIGTSTP child's pipe to its parent. */
static int tstp_fd;

static void on_tstp(int sig)
{
	(void)sig;
	write(tstp_fd, "h", 1);
}

/* The child spins in user mode, sending its counter down `fd` now and
 * then. */
static void spin(int fd)
{
	unsigned long n = 0;
	for (;;) {
		if ((++n & 0xfffff) == 0 && write(fd, &n, sizeof n) < 0)
			_exit(1);
	}
}

/* Everything in the pipe now (non-blocking); how many counters. */
static int drain(int fd)
{
	unsigned long v;
	int k = 0;
	while (read(fd, &v, sizeof v) == sizeof v)
		k++;
	return k;
}

/* Whether a counter comes within 20 s. */
static int comes(int fd)
{
	for (int i = 0; i < 200; i++) {
		if (drain(fd) > 0)
			return 1;
		nap(100);
	}
	return 0;
}

int main(void)
{
	struct sigaction sa;
	sigset_t chld, pend;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_chld;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	/* A stall ends the program (and fails the comparison). */
	alarm(120);
	say("=BEGIN=\n");

	say("kill -STOP, kill -CONT, kill -TERM of a child:\n");
	pid_t c = child_pausing();
	kill(c, SIGSTOP);
	waitfor(c, WUNTRACED, "wait WUNTRACED");
	expect_chld(c);
	waitfor(c, WUNTRACED | WNOHANG, "again (reported once)");
	kill(c, SIGSTOP);
	waitfor(c, WUNTRACED | WNOHANG, "a second SIGSTOP");
	kill(c, SIGCONT);
	waitfor(c, WCONTINUED, "wait WCONTINUED");
	expect_chld(c);
	waitfor(c, WCONTINUED | WNOHANG, "again (reported once)");
	kill(c, SIGTERM);
	waitfor(c, WUNTRACED | WCONTINUED, "wait");
	expect_chld(c);

	say("a stop not asked for is not reported:\n");
	c = child_pausing();
	kill(c, SIGSTOP);
	expect_chld(c);
	waitfor(c, WNOHANG, "wait WNOHANG without WUNTRACED");
	kill(c, SIGKILL);
	waitfor(c, WUNTRACED, "SIGKILL of the stopped child");
	expect_chld(c);

	say("SIGTSTP caught, then by default:\n");
	int sync[2];
	char b;
	if (pipe(sync) < 0)
		return 1;
	c = fork_grouped();
	if (c == 0) {
		tstp_fd = sync[1];
		signal(SIGTSTP, on_tstp);
		write(sync[1], "r", 1);
		for (;;)
			pause();
	}
	read(sync[0], &b, 1);
	kill(c, SIGTSTP);
	read(sync[0], &b, 1);
	say("  the child's handler ran: %s\n", b == 'h' ? "yes" : "no");
	waitfor(c, WUNTRACED | WNOHANG, "after a caught SIGTSTP");
	close(sync[0]);
	close(sync[1]);
	kill(c, SIGKILL);
	waitfor(c, 0, "wait");
	expect_chld(c);
	c = child_pausing();
	kill(c, SIGTSTP);
	waitfor(c, WUNTRACED, "default SIGTSTP");
	expect_chld(c);
	kill(c, SIGCONT);
	expect_chld(c);
	kill(c, SIGKILL);
	waitfor(c, WUNTRACED | WCONTINUED, "wait");
	expect_chld(c);

	say("a stopped child makes no progress:\n");
	int fds[2];
	if (pipe2(fds, O_NONBLOCK) < 0)
		return 1;
	c = fork_grouped();
	if (c == 0) {
		close(fds[0]);
		spin(fds[1]);
	}
	close(fds[1]);
	say("  running: counters came: %s\n", comes(fds[0]) ? "yes" : "no");
	kill(c, SIGSTOP);
	waitfor(c, WUNTRACED, "wait WUNTRACED");
	expect_chld(c);
	nap(100);
	drain(fds[0]);
	nap(500);
	say("  stopped: counters came: %s\n", drain(fds[0]) > 0 ? "yes" : "no");
	kill(c, SIGCONT);
	expect_chld(c);
	say("  continued: counters came: %s\n", comes(fds[0]) ? "yes" : "no");
	kill(c, SIGKILL);
	waitfor(c, 0, "wait");
	expect_chld(c);
	close(fds[0]);

	say("SIGCONT discards a pending stop signal; a blocked one stops when unblocked:\n");
	for (int round = 0; round < 2; round++) {
		int go[2], back[2];
		if (pipe(go) < 0 || pipe(back) < 0)
			return 1;
		c = fork_grouped();
		if (c == 0) {
			sigset_t tstp;
			char b;
			sigemptyset(&tstp);
			sigaddset(&tstp, SIGTSTP);
			sigprocmask(SIG_BLOCK, &tstp, NULL);
			write(back[1], "r", 1);
			read(go[0], &b, 1);
			sigpending(&pend);
			b = sigismember(&pend, SIGTSTP) ? 'y' : 'n';
			write(back[1], &b, 1);
			sigprocmask(SIG_UNBLOCK, &tstp, NULL);
			_exit(7);
		}
		char b;
		read(back[0], &b, 1);
		kill(c, SIGTSTP);
		if (round == 0)
			kill(c, SIGCONT);
		write(go[1], "g", 1);
		read(back[0], &b, 1);
		say("  round %d: SIGTSTP pending in the child: %s\n", round, b == 'y' ? "yes" : "no");
		waitfor(c, WUNTRACED, "wait WUNTRACED");
		expect_chld(c);
		if (round == 1) {
			/* It continues and exits at once: the two SIGCHLDs may
			 * come as one (a signal pending is not queued twice). */
			kill(c, SIGCONT);
			waitfor(c, 0, "after SIGCONT");
			sigset_t none;
			sigemptyset(&none);
			while (!chld_seen)
				sigsuspend(&none);
			sigprocmask(SIG_UNBLOCK, &chld, NULL);
			sigprocmask(SIG_BLOCK, &chld, NULL);
			chld_seen = 0;
			say("  SIGCHLD came\n");
		}
		close(go[0]);
		close(go[1]);
		close(back[0]);
		close(back[1]);
	}

	say("SA_NOCLDSTOP:\n");
	sa.sa_flags |= SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	c = child_pausing();
	kill(c, SIGSTOP);
	waitfor(c, WUNTRACED, "wait WUNTRACED");
	kill(c, SIGCONT);
	waitfor(c, WCONTINUED, "wait WCONTINUED");
	nap(200);
	sigpending(&pend);
	say("  SIGCHLD pending: %s\n", sigismember(&pend, SIGCHLD) ? "yes" : "no");
	kill(c, SIGTERM);
	waitfor(c, 0, "wait");
	expect_chld(c);

	say("=END=\n");
	return 0;
}
