//! Console input: `k42vmm run IMAGE -- COMMAND` forwards its stdin to the
//! guest (ConsoleRead), puts a terminal in raw mode for the run and
//! restores it on every way out (the guest's exit, --timeout, SIGTERM,
//! the escape Ctrl-A x), and never waits for stdin at exit; job control
//! at interactive busybox sh and bash (^Z, jobs, bg, fg, kill %1, a
//! background read stopped by SIGTTIN) as on host Linux.
//!
//! The terminal tests run k42vmm on a pseudo-terminal of their own
//! (openpty; k42vmm in a new session with the pty as its controlling
//! terminal, as under a shell).

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A pseudo-terminal: the master the test types into and reads from,
/// and the slave k42vmm gets as stdin, stdout and stderr.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn openpty() -> Pty {
    let (mut m, mut s) = (0, 0);
    // SAFETY: valid out-pointers; null name, termios and window size.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // Other tests' children must not inherit them (the master would not
    // see the end of the output while they run).
    for fd in [m, s] {
        // SAFETY: a descriptor openpty just opened.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: openpty just opened both, and nothing else owns them.
    unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

fn termios(fd: &OwnedFd) -> libc::termios {
    // SAFETY: plain data, filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and pointer.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t
}

/// The fields `stty -g` prints.
fn settings(t: &libc::termios) -> (u32, u32, u32, u32, Vec<u8>) {
    (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc.to_vec())
}

fn is_raw(t: &libc::termios) -> bool {
    t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN) == 0
        && t.c_iflag & (libc::ICRNL | libc::IXON) == 0
        && t.c_oflag & libc::OPOST != 0
}

/// k42vmm running `command` in the default image on a fresh pty.
struct OnPty {
    pty: Pty,
    child: Child,
    before: libc::termios,
    output: std::thread::JoinHandle<Vec<u8>>,
}

fn start_on_pty(timeout: &str, command: &[&str]) -> OnPty {
    start_on_sized_pty(timeout, command, None)
}

/// As [`start_on_pty`], the terminal `rows` x `cols` when given.
fn start_on_sized_pty(timeout: &str, command: &[&str], size: Option<(u16, u16)>) -> OnPty {
    require_kvm();
    let pty = openpty();
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid descriptor and a live `winsize`.
        let r = unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
    let before = termios(&pty.slave);
    assert!(!is_raw(&before), "a new pty starts in cooked mode");
    let image = default_image();
    let mut cmd = Command::new(k42vmm());
    cmd.args(["run", "--vcpus", "1", "--timeout", timeout])
        .arg(&image)
        .arg("--")
        .args(command);
    let slave = || Stdio::from(pty.slave.try_clone().expect("dup of the pty"));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("k42vmm starts");
    // Drain the terminal's output, or the guest's writes would block.
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let output = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    OnPty {
        pty,
        child,
        before,
        output,
    }
}

impl OnPty {
    /// Wait until k42vmm has put the terminal in raw mode.
    fn wait_for_raw_mode(&mut self) {
        let t0 = Instant::now();
        while !is_raw(&termios(&self.pty.slave)) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("k42vmm exited ({st}) before raw mode was seen");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no raw mode after 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn type_keys(&self, bytes: &[u8]) {
        let mut m = std::fs::File::from(self.pty.master.try_clone().unwrap());
        m.write_all(bytes).unwrap();
    }

    /// Wait for k42vmm (at most 120 s), check that the terminal's
    /// settings are back as they were, and return its status and output.
    fn finish(mut self) -> (ExitStatus, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!("k42vmm still running after 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let after = termios(&self.pty.slave);
        drop(self.pty.slave);
        let output = String::from_utf8_lossy(&self.output.join().unwrap()).into_owned();
        assert_eq!(
            settings(&after),
            settings(&self.before),
            "the terminal's settings were not restored ({status})\n--- output\n{output}"
        );
        (status, output)
    }
}

#[test]
fn raw_mode_for_the_run_and_restored_at_the_guests_exit() {
    let mut run = start_on_pty("60s", &["/bin/busybox", "true"]);
    run.wait_for_raw_mode();
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("init exited with status 0"), "{output}");
}

/// The guest's terminal has k42vmm's terminal's size (TIOCGWINSZ), and
/// TIOCSWINSZ in the guest changes it there.
#[test]
fn the_guest_terminal_has_the_hosts_window_size() {
    let mut run = start_on_sized_pty(
        "60s",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo size=$(stty size); stty rows 30 cols 90; echo now=$(stty size)",
        ],
        Some((37, 101)),
    );
    run.wait_for_raw_mode();
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("size=37 101"), "{output}");
    assert!(output.contains("now=30 90"), "{output}");
}

/// Resizing k42vmm's terminal resizes the guest's: the foreground
/// program gets SIGWINCH and reads the new size.
#[test]
fn a_resize_of_the_host_terminal_reaches_the_guest() {
    let mut run = start_on_sized_pty(
        "120s",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "trap 'echo winch=$(stty size); exit 0' WINCH; while :; do sleep 1; done",
        ],
        Some((37, 101)),
    );
    run.wait_for_raw_mode();
    // Resize until the guest's trap (set some time after boot) reports
    // a size and the shell exits: 41 x 133 and 42 x 134 in turn.
    let t0 = Instant::now();
    let mut turn = 0u16;
    while run.child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(90) {
        let ws = libc::winsize {
            ws_row: 41 + turn % 2,
            ws_col: 133 + turn % 2,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid descriptor and a live `winsize`.
        let r = unsafe { libc::ioctl(run.pty.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        turn += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(
        output.contains("winch=41 133") || output.contains("winch=42 134"),
        "{output}"
    );
}

#[test]
fn ctrl_a_x_stops_the_vm_with_130_and_restores_the_terminal() {
    let mut run = start_on_pty("60s", &["/bin/busybox", "sleep", "50"]);
    run.wait_for_raw_mode();
    run.type_keys(b"\x01x");
    let t0 = Instant::now();
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(130), "{output}");
    assert!(output.contains("Ctrl-A x"), "{output}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{output}");
}

#[test]
fn timeout_and_sigterm_restore_the_terminal() {
    let mut run = start_on_pty("3s", &["/bin/busybox", "sleep", "50"]);
    run.wait_for_raw_mode();
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(124), "{output}");

    let mut run = start_on_pty("60s", &["/bin/busybox", "sleep", "50"]);
    run.wait_for_raw_mode();
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // own child, not yet waited for.
    let r = unsafe { libc::kill(run.child.id() as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
    let (status, output) = run.finish();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{output}");
}

/// A stdin that never ends, and one that floods k42vmm while the guest
/// reads nothing: k42vmm queues at most 64 KiB of it, reads no more, and
/// exits with the guest all the same.
#[test]
fn stdin_never_holds_up_the_exit_and_is_bounded() {
    require_kvm();
    let image = default_image();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut child = Command::new(k42vmm())
        .args(["run", "--vcpus", "1", "--timeout", "60s", "--report"])
        .arg(&report)
        .arg(&image)
        .args(["--", "/bin/busybox", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("k42vmm starts");
    let mut stdin = child.stdin.take().unwrap();
    // 1 MiB, more than the queue and the pipe hold; the writer blocks,
    // then fails once k42vmm is gone.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'y'; 4096];
        let mut written = 0usize;
        while written < 1 << 20 && stdin.write_all(&chunk).is_ok() {
            written += chunk.len();
        }
        // `stdin` stays open until here: input never ends before exit.
        written
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let written = writer.join().unwrap();
    assert!(written < 1 << 20, "k42vmm read all of it ({written} bytes)");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let c = &r["console_input"];
    let (bytes_in, bytes_read) = (
        c["bytes_in"].as_u64().unwrap(),
        c["bytes_read"].as_u64().unwrap(),
    );
    assert!(bytes_in >= 64 << 10, "{c}");
    assert!(bytes_in - bytes_read <= 64 << 10, "{c}");
    assert_eq!(c["terminal"], false, "{c}");
    assert!(c.get("interrupt_error").is_none(), "{c}");
}

/// Without a command, stdin is not forwarded (ConsoleRead is refused).
#[test]
fn no_console_input_without_a_command() {
    let (out, r) = boot(1, &["--cmdline", "test=none"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(r.get("console_input").is_none(), "{r}");
}

/// Piped lines reach a program's stdin in the guest.
#[test]
fn piped_input_reaches_the_command() {
    require_kvm();
    let image = default_image();
    let mut child = Command::new(k42vmm())
        .args(["run", "--timeout", "120s"])
        .arg(&image)
        .args(["--", "/bin/busybox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("k42vmm starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("hello\nworld\n"),
        "{}",
        describe(&out)
    );
}

/// Wait until the terminal's output so far (`seen`, filled by a drain
/// thread) contains `text`, at most 120 s.
fn expect_output(seen: &std::sync::Mutex<Vec<u8>>, text: &str) {
    let t0 = Instant::now();
    loop {
        if String::from_utf8_lossy(&seen.lock().unwrap()).contains(text) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {text:?} after 120 s:\n{}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An interactive busybox shell on the terminal: its prompt, a command,
/// ^C interrupting `sleep 100` (the foreground job gets SIGINT; the shell
/// reports 130), ^D ending the shell, k42vmm exiting 0 with the terminal
/// restored.
#[test]
fn an_interactive_shell_on_the_terminal() {
    require_kvm();
    let pty = openpty();
    let before = termios(&pty.slave);
    let image = default_image();
    let mut cmd = Command::new(k42vmm());
    cmd.args(["run", "--vcpus", "2", "--timeout", "300s"])
        .arg(&image)
        .args(["--", "/bin/sh"]);
    let slave = || Stdio::from(pty.slave.try_clone().expect("dup of the pty"));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("k42vmm starts");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let copy = seen.clone();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            copy.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let run = OnPtyKeys(std::fs::File::from(pty.master.try_clone().unwrap()));
    expect_output(&seen, "/ # ");
    run.keys(b"echo hi $((6*7))\r");
    expect_output(&seen, "hi 42");
    run.keys(b"sleep 100\r");
    std::thread::sleep(Duration::from_secs(3));
    run.keys(b"\x03");
    run.keys(b"echo status $?\r");
    expect_output(&seen, "status 130");
    run.keys(b"\x04");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "k42vmm still running after ^D"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = termios(&pty.slave);
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(
        settings(&after),
        settings(&before),
        "terminal not restored\n{text}"
    );
    drop(pty);
    drop(drain);
}

/// Keys typed at the terminal's master side.
struct OnPtyKeys(std::fs::File);

impl OnPtyKeys {
    fn keys(&self, bytes: &[u8]) {
        (&self.0).write_all(bytes).unwrap();
    }
}

/// One step of an interactive session on a terminal.
enum Step {
    /// Keys typed at the terminal.
    Keys(&'static [u8]),
    /// Text the terminal shows next (after what the earlier steps found).
    Shows(&'static str),
    /// A pause (ms): a command starting before the next key.
    Pause(u64),
}

/// Run `cmd` in a new session on a pty of its own (its controlling
/// terminal) through `steps`, then wait for it to exit; its exit status,
/// everything the terminal showed, and whether the terminal's settings
/// were as before. Panics, with the output, at a step that does not
/// show what it should within a minute.
fn session(mut cmd: Command, who: &str, steps: &[Step]) -> (ExitStatus, String, bool) {
    let pty = openpty();
    let before = termios(&pty.slave);
    let slave = || Stdio::from(pty.slave.try_clone().expect("dup of the pty"));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("the shell starts");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let copy = seen.clone();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            copy.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let keys = OnPtyKeys(std::fs::File::from(pty.master.try_clone().unwrap()));
    let mut from = 0;
    for step in steps {
        match step {
            Step::Keys(k) => keys.keys(k),
            Step::Pause(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Shows(text) => {
                let t0 = Instant::now();
                loop {
                    let now = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
                    if let Some(i) = now[from..].find(text) {
                        from += i + text.len();
                        break;
                    }
                    if t0.elapsed() > Duration::from_secs(60) {
                        let _ = child.kill();
                        panic!("{who}: {text:?} not shown after {:?}\n{now}", &now[from..]);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!(
                "{who}: still running at the end\n{}",
                String::from_utf8_lossy(&seen.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let restored = settings(&termios(&pty.slave)) == settings(&before);
    drop(pty);
    drop(drain);
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    (status, text, restored)
}

/// Job control at an interactive shell, `prompt` its prompt's end and
/// `resumed` what `bg` prints: `sleep 100`, ^Z (the job stops: "Stopped"),
/// `jobs`, `bg` (it runs on), `kill %1`; `cat &` reading the terminal in
/// the background (SIGTTIN stops it), `fg` (it reads a line); `sleep
/// 100`, ^Z, `fg`, ^C (status 130), ^D. The same keys on host Linux
/// (the same static shell on a pty of its own) and in the guest must
/// show the same texts in the same order; k42vmm exits 0 with the
/// terminal restored.
fn job_control_as_on_linux(
    host: &[&str],
    guest: &[&str],
    prompt: &'static str,
    resumed: &'static str,
) {
    use Step::*;
    let steps = [
        Shows(prompt),
        Keys(b"sleep 100\r"),
        Pause(5000),
        Keys(b"\x1a"),
        Shows("Stopped"),
        Shows("sleep 100"),
        Shows(prompt),
        Keys(b"jobs\r"),
        Shows("[1]+  Stopped"),
        Shows(prompt),
        Keys(b"bg\r"),
        Shows(resumed),
        Shows(prompt),
        Keys(b"jobs\r"),
        Shows("[1]+  Running"),
        Shows(prompt),
        // "Terminated" comes before the next prompt or at `jobs`, as
        // the job's end and the shell's reading race.
        Keys(b"kill %1\r"),
        Pause(3000),
        Keys(b"jobs\r"),
        Shows("Terminated"),
        Shows(prompt),
        Keys(b"cat &\r"),
        Shows(prompt),
        Pause(5000),
        Keys(b"jobs\r"),
        Shows("[1]+  Stopped"),
        Shows("cat"),
        Shows(prompt),
        Keys(b"fg\r"),
        Shows("cat"),
        Pause(3000),
        Keys(b"typed\r"),
        Shows("typed\r\ntyped"),
        Keys(b"\x04"),
        Shows(prompt),
        Keys(b"sleep 100\r"),
        Pause(5000),
        Keys(b"\x1a"),
        Shows("Stopped"),
        Shows(prompt),
        Keys(b"fg\r"),
        Shows("sleep 100"),
        Pause(3000),
        Keys(b"\x03"),
        Shows(prompt),
        Keys(b"echo status $?\r"),
        Shows("status 130"),
        Shows(prompt),
        Keys(b"\x04"),
    ];
    let mut on_host = Command::new(host[0]);
    on_host
        .args(&host[1..])
        .current_dir("/")
        .env_clear()
        .env("HOME", "/");
    let (status, text, _) = session(on_host, "host", &steps);
    assert!(status.success(), "host: {status}\n{text}");
    require_kvm();
    let image = default_image();
    let mut on_guest = Command::new(k42vmm());
    on_guest
        .args(["run", "--vcpus", "2", "--timeout", "300s"])
        .arg(&image)
        .arg("--")
        .args(guest);
    let (status, text, restored) = session(on_guest, "guest", &steps);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(restored, "terminal not restored\n{text}");
}

#[test]
fn job_control_in_busybox_sh_as_on_linux() {
    job_control_as_on_linux(
        &["/bin/busybox", "sh", "-i"],
        &["/bin/sh"],
        "/ # ",
        "[1] sleep 100",
    );
}

#[test]
fn job_control_in_bash_as_on_linux() {
    job_control_as_on_linux(
        &["/bin/bash-static", "--norc", "--noprofile", "-i"],
        &["/bin/bash", "--norc", "--noprofile", "-i"],
        // bash-static on the host, bash in the guest (its argv[0]).
        "-5.2# ",
        "[1]+ sleep 100 &",
    );
}
