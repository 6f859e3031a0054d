//! The Linux personality (issue 15, first part): Debian's own static
//! busybox, byte for byte as the package ships it, runs in the guest
//! through `k42vmm run IMAGE -- COMMAND`, and a shell script's output
//! matches the same binary's on host Linux byte for byte.
//!
//! What runs here: exec from the file server (ELF and `#!`), fork, wait,
//! pipes, redirections to files, directories, the working directory,
//! signals (traps, `kill`, background jobs with `wait`, SIGPIPE, the
//! exit statuses of signalled processes; stop and continue, the
//! alternate signal stack), many processes, a MiB through
//! a pipe; many short pipelines at 4 vCPUs with no stall; the everyday
//! file tools (tar and gzip round trips, find | xargs, cp, mv, rm, grep,
//! sed, awk, diff, cmp, od); bad pointers (EFAULT) and bad programs; a
//! system-call fuzzer.

mod common;

use std::process::Command;

use common::*;

/// Debian's busybox-static, as the image holds it at /bin/busybox.
const HOST_BUSYBOX: &str = "/bin/busybox";

/// A script of shell features and applets whose output does not depend
/// on the machine (no pids, times or host paths). Applets are called as
/// `busybox NAME`, which works the same on the host and in the guest.
const SCRIPT: &str = r#"
B=/bin/busybox
echo =BEGIN=
echo $((6*7)) "quoted  spaces" 'single'
x=$($B basename /a/b/c.txt .txt); echo "subst: $x"
mkdir -p /tmp/k42t/sub && cd /tmp/k42t && pwd
echo one > f; echo two >> f; $B cat f
$B wc -l < f
printf 'b\na\nc\na\n' | $B sort | $B uniq -c
echo hello world | $B tr a-z A-Z | $B cut -c1-5
seq_out=$($B seq 1 5 | $B head -3 | $B tail -1); echo "seq: $seq_out"
$B false; echo "false: $?"
(exit 3); echo "subshell: $?"
$B test -d sub && echo "sub is a directory"
$B ls
for i in 1 2 3; do printf '%s-' "$i"; done; echo
cat <<EOF2 | $B wc -c
here document
EOF2
$B echo to-nowhere >/dev/null 2>&1; echo "redirected to /dev/null"
$B rm -r sub; $B ls
{ echo one; (echo two); $B echo three; echo four; } > shared; $B cat shared
exec 3<shared; read a <&3; (read b <&3; echo "child read $b"); read c <&3; echo "$a $c"; exec 3<&-
cd / && $B rm -r /tmp/k42t
echo =END=
"#;

fn guest(vcpus: u32, command: &[&str]) -> std::process::Output {
    guest_within(vcpus, "600s", command)
}

fn script_matches_linux(vcpus: u32) {
    busybox_matches_linux(SCRIPT, "k42t", vcpus);
}

/// Run `script` with busybox sh on the host and in the guest (with
/// `vcpus`); the output between the markers must be the same. `/tmp/TAG`
/// in the script becomes a directory of this test's own: tests run at
/// once, and the host's /tmp is shared.
fn busybox_matches_linux(script: &str, tag: &str, vcpus: u32) {
    busybox_matches_linux_within(script, tag, vcpus, "600s");
}

/// [`busybox_matches_linux`] with the guest stopped after `timeout` (a
/// stall then fails the test in that time, not the usual 600 s).
fn busybox_matches_linux_within(script: &str, tag: &str, vcpus: u32, timeout: &str) {
    let dir = format!("/tmp/{tag}-{}-{vcpus}", std::process::id());
    let script = script.replace(&format!("/tmp/{tag}"), &dir);
    let script = script.as_str();
    let host = Command::new(HOST_BUSYBOX)
        .args(["sh", "-c", script])
        .output()
        .expect("host busybox runs (make installs busybox-static)");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    let out = guest_within(vcpus, timeout, &["/bin/busybox", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        between_markers(&text),
        between_markers(&host_text),
        "guest and host differ\n{}",
        describe(&out)
    );
}

/// A program's descriptor 2 is k42vmm's stderr, apart from its stdout:
/// the same script writes the same bytes to each stream as on host Linux
/// (k42vmm adds its own lines to stderr after the guest's), and `2>&1`
/// or `>&2` move output between them as on Linux.
#[test]
fn stderr_is_k42vmm_s_stderr() {
    let script = "echo =BEGIN=; echo out; echo err >&2; /bin/busybox ls /nonexistent; \
        echo \"status $?\"; (echo sub-err >&2); echo both 2>&1 >&2; \
        exec 2>&1; echo now-out >&2; echo =END=";
    let host = Command::new(HOST_BUSYBOX)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    let out = guest(1, &["/bin/busybox", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        between_markers(&stdout(&out)),
        between_markers(&String::from_utf8(host.stdout).unwrap()),
        "{}",
        describe(&out)
    );
    let host_err = String::from_utf8(host.stderr).unwrap();
    assert!(host_err.contains("err\n") && host_err.contains("sub-err\n"));
    assert!(
        stderr(&out).starts_with(&host_err),
        "guest stderr does not start with the host's {host_err:?}\n{}",
        describe(&out)
    );
}

#[test]
fn a_busybox_script_prints_what_it_prints_on_linux_1_vcpu() {
    script_matches_linux(1);
}

#[test]
fn a_busybox_script_prints_what_it_prints_on_linux_4_vcpus() {
    script_matches_linux(4);
}

/// Signals and jobs: a trap, `kill` of a background job (default
/// action and SIGKILL), a subshell's TERM trap, `wait` for several jobs,
/// SIGPIPE (a pipeline's status under pipefail), a shell killing itself,
/// an ignored and a caught signal sent to oneself; then 200 processes in
/// a loop and a MiB through a pipe; `read -t` (poll on a pipe, with and
/// without its timeout passing). The shell's stderr (job reports like
/// "Terminated") is dropped: in the guest it shares the console with
/// stdout.
const SIGNALS: &str = r#"
B=/bin/busybox
exec 2>/dev/null
echo =BEGIN=
mkdir -p /tmp/k42s && cd /tmp/k42s && rm -f ready
trap 'echo trapped INT' INT
kill -INT $$
echo "after INT"
trap - INT
$B sleep 5 & kill -TERM $!; wait $!; echo "sleep killed: $?"
$B sleep 5 & kill -9 $!; wait $!; echo "sleep killed -9: $?"
( trap 'echo sub got TERM; exit 3' TERM; : > ready; while :; do $B sleep 1; done ) &
p=$!
while [ ! -e ready ]; do $B sleep 0.1; done
kill -TERM $p; wait $p; echo "subshell: $?"
for i in 1 2 3; do $B sleep 0.1 & done; wait; echo "waited for all: $?"
$B yes | $B head -2
set -o pipefail; $B yes | $B head -1 >/dev/null; echo "pipefail: $?"; set +o pipefail
$B sh -c 'kill -TERM $$; echo not here'; echo "sh killed itself: $?"
$B sh -c 'trap "" TERM; kill -TERM $$; echo ignored TERM'
$B sh -c 'trap "echo usr1" USR1; kill -USR1 $$; echo after usr1'
$B sh -c 'exit 5' & wait $!; echo "background exit: $?"
($B sleep 0.3; echo late) | (read -t 2 x; echo "read waited for: $x")
($B sleep 1; echo late) | (read -t 0.2 x; echo "read timed out: $?")
n=0; while [ $n -lt ${PROCESSES:-200} ]; do $B true; n=$((n+1)); done; echo "$n processes"
$B dd if=/dev/zero bs=1024 count=1024 | $B wc -c
$B head -c 1048576 /dev/zero | $B md5sum
cd / && rm -r /tmp/k42s
echo =END=
"#;

#[test]
fn signals_and_jobs_behave_as_on_linux_1_vcpu() {
    busybox_matches_linux(SIGNALS, "k42s", 1);
}

/// At 4 vCPUs with 50 processes in the loop rather than 200: the suite
/// runs tests two at a time on two host CPUs, and with 200 the test took
/// 200 s on the busy 2-core machine (after the stall's fix), over the
/// suite's budget of about three minutes a test. (Twice, run that way,
/// the guest stalled with every vCPU halted just after `yes | head -2`:
/// the pipe end a CPU kept while idle, see
/// `many_pipelines_kills_and_waits_never_stall_4_vcpus`.)
#[test]
fn signals_and_jobs_behave_as_on_linux_4_vcpus() {
    busybox_matches_linux(&format!("PROCESSES=50\n{SIGNALS}"), "k42s", 4);
}

/// Everyday tools on files, against the same busybox on Linux: `tar`
/// with and without `gzip` (a list, a compressed round trip compared
/// with `diff -r`), `gzip -d` checked by `md5sum` and `cmp`, `find |
/// xargs`, `cp -r`, `mv`, `rm -r`, `mkdir -p`, `touch -d` read back by
/// `date -r`, `grep`, `sed`, `awk`, `diff` (its exit status and unified
/// output), `cmp`, `od`.
const TOOLS: &str = r#"
B=/bin/busybox
echo =BEGIN=
mkdir -p /tmp/k42u && cd /tmp/k42u
$B mkdir -p src/a/b src/c
printf 'alpha\nbeta\ngamma\n' > src/a/one.txt
$B seq 1 2000 > src/a/b/numbers
echo hi > src/c/hi; $B touch src/empty
$B tar cf plain.tar src; $B tar tf plain.tar | $B sort
$B tar czf src.tgz src
mkdir out && cd out && $B tar xzf ../src.tgz && cd ..
$B diff -r src out/src && echo "tar round trip same"
$B gzip -c src/a/b/numbers > n.gz; $B gzip -d -c n.gz | $B md5sum
$B gzip -d < n.gz | $B cmp - src/a/b/numbers && echo "gzip -d same"
$B find src -type f | $B sort | $B xargs $B wc -l
$B find src -name '*.txt' | $B xargs $B cat
$B cp -r src copy; $B diff -r src copy && echo "cp -r same"
$B mv copy/a/one.txt copy/moved.txt; $B ls copy copy/a
$B rm -r copy/a; $B find copy | $B sort
TZ=UTC $B touch -d '2021-03-04 05:06:07' stamp; TZ=UTC $B date -r stamp +%Y-%m-%dT%H:%M:%S
$B grep -n a src/a/one.txt; $B grep -c 1 src/a/b/numbers
$B sed -n '2p;$p' src/a/one.txt; $B sed 's/a/A/g' src/a/one.txt
$B awk '{ s += $1 } END { print s, NR }' src/a/b/numbers
printf 'k:v:w\nx:y:z\n' | $B awk -F: '{ print $3 $1 }'
printf 'one\ntwo\nthree\n' > d1; printf 'one\n2\nthree\n' > d2
$B diff d1 d2; echo "diff: $?"
$B cmp d1 d2; echo "cmp: $?"
printf 'AB\001\377' | $B od -An -tx1
printf 'hello' | $B od -c
$B rm -r src out; $B ls
cd / && $B rm -r /tmp/k42u
echo =END=
"#;

#[test]
fn file_tools_behave_as_on_linux_1_vcpu() {
    busybox_matches_linux(TOOLS, "k42u", 1);
}

#[test]
fn file_tools_behave_as_on_linux_4_vcpus() {
    busybox_matches_linux(TOOLS, "k42u", 4);
}

/// Many short pipelines, kills and waits at 4 vCPUs: `yes | head -1`
/// (the reader blocks on the empty pipe, the writer on the full one,
/// then gets EPIPE and SIGPIPE when the reader exits) and a killed
/// background job waited for, over and over. Before the scheduler waited
/// for the next thread only at a trap's end, a CPU that went idle inside
/// a blocked reader's call kept that call's reference to the pipe's read
/// end: the reader, woken on another CPU, exited, but the read end never
/// closed, `yes` waited on the full pipe for ever and every vCPU halted
/// (within a few dozen rounds with the host busy).
const PIPELINES: &str = r#"
B=/bin/busybox
exec 2>/dev/null
echo =BEGIN=
n=0
while [ $n -lt ${ROUNDS:-40} ]; do
  $B yes | $B head -1 >/dev/null
  $B sleep 5 & kill -TERM $!; wait $!
  n=$((n+1))
done
echo "$n rounds, last status $?"
$B yes | $B head -3
echo =END=
"#;

#[test]
fn many_pipelines_kills_and_waits_never_stall_4_vcpus() {
    busybox_matches_linux_within(PIPELINES, "k42p", 4, "300s");
}

/// Links, modes and times: symbolic links (relative, absolute, through
/// `..`, dangling, looping), hard links and link counts, `chmod`, the
/// umask, `mkdir -m`, `touch -d` read back by `stat`, `find`, `mv` of a
/// link; and the image's `/bin/sh` and applet links.
const LINKS: &str = r#"
B=/bin/busybox
echo =BEGIN=
mkdir -p /tmp/k42l && cd /tmp/k42l
echo data > file
$B ln -s file link; $B readlink link; $B cat link
mkdir sub; echo inner > sub/x; $B ln -s /tmp/k42l/sub abs; $B cat abs/x
mkdir sub/in; $B ln -s ../x sub/in/rel; $B cat sub/in/rel
$B ln file hard; $B stat -c '%h %s %F' file hard link
$B ls -l link | $B cut -c1-10
$B chmod 640 file; $B stat -c '%a %A' file
$B chmod +x file; $B stat -c '%a' file
TZ=UTC $B touch -d '2020-01-02 03:04:05' file; $B stat -c '%Y' file
echo more >> file; test "$($B stat -c %Y file)" -gt 1577934245 && echo "a write moves the time"
TZ=UTC $B touch -d '2020-01-02 03:04:05' file; $B stat -c '%Y' file
$B truncate -s 2 file 2>/dev/null || : > file; test "$($B stat -c %Y file)" -gt 1577934245 && echo "a truncation moves the time"
echo data > file
TZ=UTC $B touch -d '2020-01-02 03:04:05' sub; : > sub/new; test "$($B stat -c %Y sub)" -gt 1577934245 && echo "a new entry moves the directory's time"
TZ=UTC $B touch -d '2020-01-02 03:04:05' sub; rm sub/new; test "$($B stat -c %Y sub)" -gt 1577934245 && echo "so does a removal"
$B rm link; test -e link || echo "link gone"; $B cat file
$B ln -s nowhere dangling; test -L dangling && echo "dangling is a link"
test -e dangling || echo "dangling target missing"
$B mkdir -m 700 d7; $B stat -c '%a' d7
(umask 027; : > u; $B stat -c '%a' u)
$B ln -s loop1 loop2; $B ln -s loop2 loop1; $B cat loop1 2>&1
$B find . | $B sort
$B rm hard; $B stat -c '%h' file
$B mv abs abs2; $B readlink abs2
$B stat -c '%F %a' /bin/busybox
echo hello | tr a-z A-Z; printf 'x\n' | wc -l
cd / && $B rm -r /tmp/k42l
echo =END=
"#;

#[test]
fn links_modes_and_times_behave_as_on_linux() {
    busybox_matches_linux(LINKS, "k42l", 2);
}

/// The image's `/bin/sh` is busybox, and every applet has its link, so
/// scripts call `ls` and `sleep` as on any Linux system.
#[test]
fn the_image_has_bin_sh_and_the_applet_links() {
    let script = "readlink /bin/sh; echo $0; ls /bin/ls /usr/bin/env; sleep 0.1; echo done";
    let out = guest(1, &["/bin/sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("busybox\n/bin/sh\n/bin/ls\n/usr/bin/env\ndone\n"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_command_ended_by_a_signal_is_128_plus_its_number() {
    let out = guest(
        1,
        &["/bin/busybox", "sh", "-c", "kill -TERM $$; echo not here"],
    );
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    assert!(!stdout(&out).contains("not here"), "{}", describe(&out));
}

#[test]
fn the_command_s_exit_status_is_k42vmm_s() {
    let out = guest(1, &["/bin/busybox", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
}

#[test]
fn a_missing_command_is_127_with_its_name() {
    let out = guest(1, &["/bin/no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(
        stdout(&out).contains("/bin/no-such-program: no such file or directory"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_file_that_is_not_a_program_is_126() {
    let out = guest(1, &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    assert!(
        stdout(&out).contains("/etc/passwd: cannot run: not an x86_64 Linux executable"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_shell_gets_enoent_as_linux_gives_it() {
    let script = "/nope; echo \"status $?\"";
    let out = guest(1, &["/bin/busybox", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // The shell's complaint is on stderr, as on Linux.
    assert!(
        stderr(&out).contains("/nope: not found"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("status 127"), "{}", describe(&out));
}

#[test]
fn a_relative_command_is_refused_before_boot() {
    require_kvm();
    let image = default_image();
    let out = run(&["run", image.to_str().unwrap(), "--", "busybox"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("must be an absolute path"),
        "{}",
        describe(&out)
    );
    assert_eq!(err.trim().lines().count(), 1, "{}", describe(&out));
}

#[test]
fn unimplemented_calls_are_named_when_the_vm_exits() {
    let out = guest(1, &["/bin/busybox", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // glibc's start-up asks for rseq, which the personality leaves to
    // ENOSYS (glibc goes on without it).
    assert!(
        stdout(&out).contains("k42: Linux system calls not implemented (ENOSYS): ")
            && stdout(&out).contains("rseq(334)x1"),
        "{}",
        describe(&out)
    );
}

/// What glibc and busybox ask of every program beyond files and
/// processes is served, not ENOSYS: `set_robust_list`, `sysinfo`,
/// `sendfile` (cp of a file larger than one round of its buffer), the
/// id calls, and `sched_getaffinity` (`nproc` counts the vCPUs). Only
/// `rseq` is left to ENOSYS, as glibc allows.
#[test]
fn the_calls_every_program_makes_are_served() {
    let script = r#"
B=/bin/busybox
echo =BEGIN=
mkdir -p /tmp/k42c && cd /tmp/k42c
$B dd if=/dev/zero bs=1000 count=300 2>/dev/null | $B tr '\0' k > big
$B cp big big2 && $B cmp big big2 && echo "copied $($B wc -c < big2)"
$B md5sum < big2
$B id
$B uptime > /dev/null && echo "uptime runs"
cd / && $B rm -r /tmp/k42c
echo =END=
echo "nproc $($B nproc)"
"#;
    let dir = format!("/tmp/k42c-{}", std::process::id());
    let script = script.replace("/tmp/k42c", &dir);
    let host = Command::new(HOST_BUSYBOX)
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(host.status.success(), "host: {}", describe(&host));
    let out = guest(3, &["/bin/busybox", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        between_markers(&text),
        between_markers(&String::from_utf8(host.stdout).unwrap()),
        "{}",
        describe(&out)
    );
    assert!(text.contains("\nnproc 3\n"), "{}", describe(&out));
    let unimplemented: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("k42: Linux system calls not implemented"))
        .collect();
    assert_eq!(unimplemented.len(), 1, "{}", describe(&out));
    let calls = unimplemented[0].rsplit(": ").next().unwrap();
    assert!(
        calls.split(' ').all(|c| c.starts_with("rseq(334)x")),
        "{}",
        describe(&out)
    );
}

/// A bash script with functions, arrays, `[[ ]]`, `read` and `printf`,
/// run by Debian's bash-static on the host and in the guest.
#[test]
fn a_bash_script_prints_what_it_prints_on_linux() {
    const BASH: &str = r#"
echo =BEGIN=
a=(one two three); echo "${#a[@]} ${a[1]} ${a[@]:1}"
f() { local x=$1; echo "f got $x"; return 4; }; f arg; echo "f returned $?"
[[ abc == a* && 3 -gt 2 ]] && echo "pattern and compare"
read -r first rest <<< "alpha beta gamma"; echo "$first|$rest"
printf '%05d %s %x\n' 42 str 255
declare -A m=([k]=v); echo "assoc ${m[k]}"
s="Hello"; echo "${s,,} ${s^^} ${s:1:3}"
for ((i = 0; i < 3; i++)); do echo -n "$i"; done; echo
echo =END=
"#;
    let host = Command::new("/bin/bash-static")
        .args(["-c", BASH])
        .output()
        .expect("host bash-static runs (make installs bash-static)");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    let out = guest(1, &["/bin/bash", "-c", BASH]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        between_markers(&stdout(&out)),
        between_markers(&host_text),
        "{}",
        describe(&out)
    );
}

/// bash's traps, background jobs and `wait`, run by Debian's bash-static
/// on the host and in the guest.
#[test]
fn bash_traps_and_jobs_behave_as_on_linux() {
    const BASH: &str = r#"
B=/bin/busybox
exec 2>/dev/null
echo =BEGIN=
trap 'echo bash trapped USR1' USR1
kill -USR1 $$
echo "after USR1"
$B sleep 5 & pid=$!; kill -TERM $pid; wait $pid; echo "killed: $?"
f() { return 7; }; f & wait $!; echo "function in background: $?"
( exit 9 ) & wait; echo "wait for all: $?"
trap 'echo EXIT trap' EXIT
echo =END=
"#;
    let host = Command::new("/bin/bash-static")
        .args(["-c", BASH])
        .output()
        .expect("host bash-static runs (make installs bash-static)");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    let out = guest(1, &["/bin/bash", "-c", BASH]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        between_markers(&stdout(&out)),
        between_markers(&host_text),
        "guest and host differ\n{}",
        describe(&out)
    );
}

/// tests/linux-c/badinput.c, built by `make` with `gcc -static`; the
/// image holds the same file at /bin/badinput.
const HOST_BADINPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/linux/badinput");

/// Bad pointers (NULL, the kernel half, an unmapped page, a non-canonical
/// address) given to read, write, stat, open, getcwd, uname, pipe,
/// wait4, rt_sigaction, clock_gettime and more get EFAULT, never a fault
/// of the program; exec of a text file, a 32-bit ELF, truncated ELFs,
/// a missing PT_INTERP interpreter gets the errno Linux gives. The same
/// static binary's output on the host and in the guest, byte for byte.
#[test]
fn bad_pointers_and_bad_programs_fail_as_on_linux() {
    let host = Command::new(HOST_BADINPUT)
        .current_dir("/")
        .output()
        .expect("target/linux/badinput runs on the host (make builds it)");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    assert!(host_text.contains("EFAULT"), "{host_text}");
    let out = guest_within(1, "120s", &["/bin/badinput"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        between_markers(&text),
        between_markers(&host_text),
        "guest and host differ\n{}",
        describe(&out)
    );
    assert!(!text.contains("killed by"), "{}", describe(&out));
}

/// The system-call fuzzer (tests/linux-c/fuzz.c): a child per CPU
/// issuing random Linux calls with random arguments for a few seconds,
/// replaced when it dies, all reaped at the end. The kernel stays up: the
/// fuzzer exits 0, the next commands in the same VM run, the VM exits 0.
#[test]
fn the_kernel_survives_a_system_call_fuzzer_on_2_vcpus() {
    let out = guest_within(
        2,
        "120s",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "/bin/fuzz 4; echo \"fuzz status $?\"; /bin/busybox ls /bin/fuzz; echo healthy",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text.contains("fuzz: seed "), "{}", describe(&out));
    assert!(text.contains("2 children"), "{}", describe(&out));
    assert!(text.contains("fuzz: done: "), "{}", describe(&out));
    assert!(
        text.contains("fuzz status 0\n/bin/fuzz\nhealthy\n"),
        "{}",
        describe(&out)
    );
    assert!(!text.to_lowercase().contains("panic"), "{}", describe(&out));
}

/// A static C test program of tests/linux-c (built by `make` with `gcc
/// -static` into target/linux/, the image holding the same file at
/// /bin/NAME): its output on the host and in the guest with `vcpus`,
/// byte for byte between the markers.
fn c_program_matches_linux(name: &str, vcpus: u32) {
    let host_path = format!("{}/../target/linux/{name}", env!("CARGO_MANIFEST_DIR"));
    // Host Linux is the yardstick, not what is tested: a host run that
    // fails or stalls (seen once for jobctl on a heavily loaded host:
    // its children kept the output pipe open) is run again, at most
    // three times. `timeout` kills the program's whole process group.
    let mut host = None;
    for _ in 0..3 {
        let run = Command::new("timeout")
            .args(["-s", "KILL", "60", &host_path])
            .current_dir("/")
            .output()
            .unwrap_or_else(|e| panic!("{host_path} runs on the host (make builds it): {e}"));
        let ok = run.status.success();
        host = Some(run);
        if ok {
            break;
        }
    }
    let host = host.expect("the host ran it");
    assert!(host.status.success(), "host: {}", describe(&host));
    let host_text = String::from_utf8(host.stdout).unwrap();
    let out = guest_within(vcpus, "120s", &[&format!("/bin/{name}")]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        between_markers(&text),
        between_markers(&host_text),
        "guest and host differ\n{}",
        describe(&out)
    );
    assert!(!text.contains("k42: process"), "{}", describe(&out));
}

/// Stop and continue (tests/linux-c/jobctl.c): kill -STOP/-CONT/-TERM
/// of a child with wait4(WUNTRACED|WCONTINUED) statuses (0x137f,
/// 0xffff), each reported once, and SIGCHLD's si_code/si_status
/// (CLD_STOPPED, CLD_CONTINUED, CLD_KILLED, CLD_EXITED); SIGTSTP caught
/// vs its default; a stopped child spinning in user mode makes no
/// progress until SIGCONT; SIGCONT discards a pending SIGTSTP, and a
/// blocked SIGTSTP stops the child once unblocked; SA_NOCLDSTOP.
#[test]
fn stop_and_continue_behave_as_on_linux_1_vcpu() {
    c_program_matches_linux("jobctl", 1);
}

#[test]
fn stop_and_continue_behave_as_on_linux_4_vcpus() {
    c_program_matches_linux("jobctl", 4);
}

/// sigaltstack (tests/linux-c/altstack.c): SS_DISABLE at start, EINVAL,
/// ENOMEM below MINSIGSTKSZ, EFAULT; an SA_ONSTACK handler on the
/// alternate stack (SS_ONSTACK, EPERM for a change there, uc_stack), a
/// nested one below it, a handler without SA_ONSTACK off it, a forked
/// child's inherited stack, SS_AUTODISARM, SS_DISABLE.
#[test]
fn the_alternate_signal_stack_behaves_as_on_linux_1_vcpu() {
    c_program_matches_linux("altstack", 1);
}

#[test]
fn the_alternate_signal_stack_behaves_as_on_linux_4_vcpus() {
    c_program_matches_linux("altstack", 4);
}

/// A background job stopped with `kill -STOP` writes nothing until
/// `kill -CONT`, then finishes and `wait` gets its status; a stopped job
/// killed with TERM ends at once (143), as on Linux.
const STOP_CONT: &str = r#"
B=/bin/busybox
exec 2>/dev/null
echo =BEGIN=
mkdir -p /tmp/k42j && cd /tmp/k42j && rm -f count finished
( i=0; while [ $i -lt 6 ]; do echo $i > count; i=$((i+1)); $B sleep 0.2; done; echo finished > finished ) &
p=$!
while [ ! -e count ]; do $B sleep 0.1; done
kill -STOP $p
$B sleep 0.5
a=$($B cat count); $B sleep 1; b=$($B cat count)
[ "$a" = "$b" ] && echo "no progress while stopped"
[ -e finished ] || echo "not finished while stopped"
kill -CONT $p
wait $p; echo "wait after CONT: $?"
$B cat finished count
$B sleep 10 & q=$!
kill -STOP $q; kill -TERM $q; wait $q; echo "stopped, then TERM: $?"
cd / && rm -r /tmp/k42j
echo =END=
"#;

#[test]
fn kill_stop_and_cont_of_a_background_job_as_on_linux_1_vcpu() {
    busybox_matches_linux_within(STOP_CONT, "k42j", 1, "120s");
}

#[test]
fn kill_stop_and_cont_of_a_background_job_as_on_linux_4_vcpus() {
    busybox_matches_linux_within(STOP_CONT, "k42j", 4, "120s");
}
