//! Console input for `k42vmm run IMAGE -- COMMAND`: k42vmm's stdin,
//! forwarded to the guest through the `ConsoleRead` hypercall.
//!
//! ```text
//!   stdin ──► reader thread ──► InputQueue (64 KiB) ──► ConsoleRead (vCPU)
//!             (poll, read,        │ full: the reader
//!              Ctrl-A escape)     │ stops reading
//!                   │             ▼
//!                   └── MSI CONSOLE_INPUT_VECTOR to APIC id 0 on each
//!                       arrival and at the end of input
//! ```
//!
//! The reader thread is detached: a `read` of a terminal or pipe can block
//! for ever, so k42vmm's exit never waits for it. It polls with a short
//! timeout and leaves once the run is over.
//!
//! When stdin is a terminal, [`RawTerminal`] puts it in raw mode for the
//! run (the guest echoes and edits lines) and restores it on every way
//! out: its drop (normal ends, errors, unwinding) and a panic hook. With
//! signals off in raw mode, ^C is just byte 0x03 for the guest; Ctrl-A
//! then x ([`EscapeFilter`]) stops the VM (exit 130), as in QEMU.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use k42_abi::hypercall::CONSOLE_INPUT_VECTOR;
use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Most input bytes k42vmm holds for the guest; with this many waiting,
/// it reads no more of its stdin until the guest takes some.
pub const QUEUE_CAPACITY: usize = 64 * 1024;

/// The escape prefix on a terminal: Ctrl-A.
pub const ESCAPE_PREFIX: u8 = 0x01;

/// The interrupt vector's target: vCPU 0.
const INPUT_APIC_ID: u32 = 0;

/// How long the reader waits in `poll` (or for room) before it checks
/// whether the run is over.
const READER_TICK: Duration = Duration::from_millis(100);

/// What [`InputQueue::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// These many bytes (at least one) were handed over.
    Bytes(usize),
    /// Nothing is waiting yet.
    Empty,
    /// The input has ended and all of it was read.
    End,
    /// The host terminal's window size (rows, columns) changed to this.
    Resize(u16, u16),
}

#[derive(Default)]
struct QueueState {
    bytes: VecDeque<u8>,
    ended: bool,
    total_in: u64,
    total_out: u64,
    /// A window size the guest has not been told yet.
    resize: Option<(u16, u16)>,
}

/// A bounded byte queue from the reader thread to the guest.
pub struct InputQueue {
    capacity: usize,
    state: Mutex<QueueState>,
    /// Signalled when bytes are taken (room appears) or the reader must stop.
    room: Condvar,
}

impl InputQueue {
    /// An empty queue holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        Self {
            capacity,
            state: Mutex::new(QueueState::default()),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append as many of `bytes` as fit; how many did.
    pub fn push(&self, bytes: &[u8]) -> usize {
        let mut s = self.lock();
        let n = bytes.len().min(self.capacity - s.bytes.len());
        s.bytes.extend(&bytes[..n]);
        s.total_in += n as u64;
        n
    }

    /// Wait up to `timeout` for room; the free space (0 if still full).
    pub fn wait_for_room(&self, timeout: Duration) -> usize {
        let s = self.lock();
        let (s, _) = self
            .room
            .wait_timeout_while(s, timeout, |s| s.bytes.len() == self.capacity)
            .unwrap_or_else(|p| p.into_inner());
        self.capacity - s.bytes.len()
    }

    /// Append all of `bytes`, waiting for the guest to make room, unless
    /// `stop` turns true first; how many went in.
    pub fn push_all(&self, mut bytes: &[u8], stop: &AtomicBool) -> usize {
        let mut done = 0;
        while !bytes.is_empty() && !stop.load(Ordering::SeqCst) {
            if self.wait_for_room(READER_TICK) == 0 {
                continue;
            }
            let n = self.push(bytes);
            done += n;
            bytes = &bytes[n..];
        }
        done
    }

    /// The host terminal's window size is now `size` (rows, columns):
    /// the guest's next take says so first.
    pub fn resize(&self, size: (u16, u16)) {
        self.lock().resize = Some(size);
    }

    /// Mark the end of the input (after its last byte).
    pub fn end(&self) {
        self.lock().ended = true;
    }

    /// Hand up to `max` waiting bytes to `deliver`; they leave the queue
    /// only if it succeeds (so a guest buffer that cannot be written
    /// loses nothing). With `max` 0 nothing is handed over, but the end
    /// is still reported.
    pub fn take<E>(
        &self,
        max: usize,
        deliver: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<Taken, E> {
        let mut s = self.lock();
        if let Some((rows, cols)) = s.resize.take() {
            return Ok(Taken::Resize(rows, cols));
        }
        if s.bytes.is_empty() {
            return Ok(if s.ended { Taken::End } else { Taken::Empty });
        }
        let n = max.min(s.bytes.len());
        if n == 0 {
            return Ok(Taken::Empty);
        }
        let front = &s.bytes.make_contiguous()[..n];
        deliver(front)?;
        s.bytes.drain(..n);
        s.total_out += n as u64;
        drop(s);
        self.room.notify_all();
        Ok(Taken::Bytes(n))
    }

    /// Bytes waiting now.
    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Whether no byte is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that came in and bytes the guest took, so far.
    pub fn totals(&self) -> (u64, u64) {
        let s = self.lock();
        (s.total_in, s.total_out)
    }

    /// Whether the end of the input has been queued.
    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Wake a reader waiting for room (to notice that the run is over).
    fn wake(&self) {
        self.room.notify_all();
    }
}

/// A command typed after the escape prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeCommand {
    /// Ctrl-A x: stop the VM.
    Quit,
    /// Ctrl-A h (or ?): print the escape keys.
    Help,
}

/// The escape keys, as [`EscapeCommand::Help`] prints them.
pub const ESCAPE_HELP: &str =
    "k42vmm: Ctrl-A x stops the VM (exit 130); Ctrl-A Ctrl-A sends Ctrl-A; Ctrl-A h prints this";

/// Finds Ctrl-A escapes in terminal input (QEMU's keys): Ctrl-A x quits,
/// Ctrl-A h or ? asks for help, Ctrl-A Ctrl-A is one Ctrl-A for the
/// guest, and Ctrl-A before any other byte passes both on. A Ctrl-A at
/// the end of one read waits for the next.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    pending: bool,
}

impl EscapeFilter {
    /// Append the guest's share of `input` to `out`, stopping at the
    /// first command (the bytes after it are left out: the caller acts
    /// on it, then filters the rest with [`EscapeFilter::filter`] again if
    /// it goes on). Returns the command and how many bytes of `input`
    /// were consumed.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> (Option<EscapeCommand>, usize) {
        for (i, &b) in input.iter().enumerate() {
            if self.pending {
                self.pending = false;
                match b {
                    b'x' | b'X' => return (Some(EscapeCommand::Quit), i + 1),
                    b'h' | b'H' | b'?' => return (Some(EscapeCommand::Help), i + 1),
                    ESCAPE_PREFIX => out.push(ESCAPE_PREFIX),
                    _ => out.extend([ESCAPE_PREFIX, b]),
                }
            } else if b == ESCAPE_PREFIX {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        (None, input.len())
    }

    /// At the end of the input: a Ctrl-A still waiting goes to the guest.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending) {
            out.push(ESCAPE_PREFIX);
        }
    }
}

/// What the run report says about console input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsoleReport {
    /// stdin was a terminal, in raw mode for the run.
    pub terminal: bool,
    /// Bytes read from stdin into the queue.
    pub bytes_in: u64,
    /// Bytes the guest took with ConsoleRead.
    pub bytes_read: u64,
    /// stdin reached its end.
    pub ended: bool,
    /// MSIs sent (KVM_SIGNAL_MSI calls that did not fail).
    pub interrupts_sent: u64,
    /// Of those, how many a local APIC took (KVM returned above 0); the
    /// others came before vCPU 0 existed (EPERM) or before the guest
    /// enabled its local APIC (0), and were dropped.
    pub interrupts_delivered: u64,
    /// The first KVM_SIGNAL_MSI failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_error: Option<String>,
}

/// Console input of one run: the queue the guest reads, and what the
/// reader thread and the main loop share.
pub struct ConsoleInput {
    pub queue: InputQueue,
    /// stdin is a terminal in raw mode (escapes are on).
    pub terminal: bool,
    /// Readable when the user typed Ctrl-A x.
    pub quit: EventFd,
    stop: AtomicBool,
    sent: AtomicU64,
    delivered: AtomicU64,
    error: OnceLock<String>,
}

impl ConsoleInput {
    /// Console input over an empty queue; `terminal` turns escapes on.
    pub fn new(terminal: bool) -> io::Result<Self> {
        Ok(Self {
            queue: InputQueue::new(QUEUE_CAPACITY),
            terminal,
            quit: EventFd::new(EFD_NONBLOCK)?,
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            error: OnceLock::new(),
        })
    }

    /// Start the detached reader thread on `fd` (stdin), interrupting
    /// the guest of `vm` (while it exists) on each arrival.
    pub fn start_reader(self: &Arc<Self>, fd: RawFd, vm: Weak<VmFd>) -> io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                me.read_loop(fd, &|| {
                    if let Some(vm) = vm.upgrade() {
                        me.record_msi(signal_input(&vm));
                    }
                })
            })
            .map(|_| ())
    }

    /// The run is over: the reader leaves at its next wake-up, sending
    /// nothing more.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.wake();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The reader: poll `fd`, read, filter escapes on a terminal, queue,
    /// and `notify` the guest on each arrival and at the end.
    pub fn read_loop(&self, fd: RawFd, notify: &dyn Fn()) {
        let mut filter = EscapeFilter::default();
        let mut buf = [0u8; 4096];
        let mut out = Vec::with_capacity(buf.len() + 1);
        // The size the guest booted with; a change is passed on within
        // a reader tick (polled: no SIGWINCH handler in k42vmm).
        let mut size = self.terminal.then(|| window_size(fd)).flatten();
        loop {
            if self.stopped() {
                return;
            }
            let outcome = wait_and_read(fd, &mut buf);
            if self.terminal {
                let now = window_size(fd);
                if now.is_some() && now != size {
                    size = now;
                    if let Some(now) = now {
                        self.queue.resize(now);
                    }
                    notify();
                }
            }
            let n = match outcome {
                ReadOutcome::Nothing => continue,
                ReadOutcome::Bytes(n) => n,
                ReadOutcome::End => {
                    out.clear();
                    if self.terminal {
                        filter.finish(&mut out);
                    }
                    self.queue.push_all(&out, &self.stop);
                    if self.stopped() {
                        return;
                    }
                    self.queue.end();
                    notify();
                    return;
                }
            };
            if self.stopped() {
                return;
            }
            let mut input = &buf[..n];
            loop {
                out.clear();
                let (command, used) = if self.terminal {
                    filter.filter(input, &mut out)
                } else {
                    out.extend_from_slice(input);
                    (None, input.len())
                };
                input = &input[used..];
                if !out.is_empty() {
                    self.queue.push_all(&out, &self.stop);
                    if self.stopped() {
                        return;
                    }
                    notify();
                }
                match command {
                    None => break,
                    Some(EscapeCommand::Quit) => {
                        let _ = self.quit.write(1);
                        return;
                    }
                    Some(EscapeCommand::Help) => eprintln!("\n{ESCAPE_HELP}"),
                }
            }
        }
    }

    fn record_msi(&self, r: Result<i32, kvm_ioctls::Error>) {
        let delivered = match r {
            // 0: the local APIC did not take it (software-disabled).
            Ok(n) => n > 0,
            // No local APIC matched: vCPU 0 does not exist yet.
            Err(e) if e.errno() == libc::EPERM => false,
            Err(e) => {
                if self.error.set(format!("KVM_SIGNAL_MSI: {e}")).is_ok() {
                    eprintln!(
                        "k42vmm: warning: cannot interrupt the guest for console input (KVM_SIGNAL_MSI: {e}); it sees input only when it polls"
                    );
                }
                return;
            }
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        if delivered {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The report's view of console input so far.
    pub fn report(&self) -> ConsoleReport {
        let (bytes_in, bytes_read) = self.queue.totals();
        ConsoleReport {
            terminal: self.terminal,
            bytes_in,
            bytes_read,
            ended: self.queue.ended(),
            interrupts_sent: self.sent.load(Ordering::Relaxed),
            interrupts_delivered: self.delivered.load(Ordering::Relaxed),
            interrupt_error: self.error.get().cloned(),
        }
    }
}

/// Send [`CONSOLE_INPUT_VECTOR`] to vCPU 0 as an MSI; KVM's answer (> 0
/// delivered, 0 not taken by the guest's local APIC).
pub fn signal_input(vm: &VmFd) -> Result<i32, kvm_ioctls::Error> {
    vm.signal_msi(kvm_msi {
        address_lo: 0xfee0_0000 | (INPUT_APIC_ID << 12),
        address_hi: 0,
        data: CONSOLE_INPUT_VECTOR as u32,
        ..Default::default()
    })
}

enum ReadOutcome {
    /// Nothing yet (a poll timeout, an interrupted call).
    Nothing,
    Bytes(usize),
    /// End of file, a hang-up, or an error that ends the input.
    End,
}

/// Wait up to [`READER_TICK`] for `fd` to be readable, then read once.
fn wait_and_read(fd: RawFd, buf: &mut [u8]) -> ReadOutcome {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, READER_TICK.as_millis() as libc::c_int) };
    if r == 0 {
        return ReadOutcome::Nothing;
    }
    if r < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => ReadOutcome::Nothing,
            _ => ReadOutcome::End,
        };
    }
    if p.revents & libc::POLLNVAL != 0 {
        return ReadOutcome::End;
    }
    // Readable, hung up or in error: read says which (a hang-up with data
    // still buffered returns the data first).
    // SAFETY: reading into a valid buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => ReadOutcome::End,
        n if n > 0 => ReadOutcome::Bytes(n as usize),
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) => ReadOutcome::Nothing,
            _ => ReadOutcome::End,
        },
    }
}

/// The terminal settings raw mode replaced, for the panic hook.
static SAVED_TERMIOS: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

/// A terminal in raw mode until this is dropped: no line editing, echo,
/// signal keys (^C, ^Z, ^\), flow control or input CR/NL translation;
/// output processing (NL → CR NL) stays as it was. A panic hook restores
/// it too.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal `fd`'s size (rows, columns), if it is a terminal that
/// knows it.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is a
    // live local.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// `termios` in raw input mode, output processing as it was.
pub fn raw_termios(mut t: libc::termios) -> libc::termios {
    t.c_iflag &=
        !(libc::ICRNL | libc::INLCR | libc::IGNCR | libc::IXON | libc::ISTRIP | libc::BRKINT);
    t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t
}

impl RawTerminal {
    /// Put terminal `fd` in raw mode.
    pub fn enter(fd: RawFd) -> io::Result<Self> {
        let saved = get_termios(fd)?;
        install_panic_hook();
        *SAVED_TERMIOS.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, saved));
        if let Err(e) = set_termios(fd, &raw_termios(saved)) {
            SAVED_TERMIOS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            return Err(e);
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = set_termios(self.fd, &self.saved);
        SAVED_TERMIOS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

fn get_termios(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a termios.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set_termios(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    loop {
        // SAFETY: a valid pointer to a termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Restore the terminal first, then report the panic as before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: a panic while the lock is held must not deadlock.
            if let Ok(mut saved) = SAVED_TERMIOS.try_lock()
                && let Some((fd, t)) = saved.take()
            {
                let _ = set_termios(fd, &t);
            }
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe just opened both, and nothing else owns them.
        unsafe {
            use std::os::fd::FromRawFd;
            (
                OwnedFd::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    fn take_all(q: &InputQueue, max: usize) -> (Vec<u8>, Taken) {
        let mut got = Vec::new();
        let t = q
            .take(max, |b| {
                got.extend_from_slice(b);
                Ok::<(), ()>(())
            })
            .unwrap();
        (got, t)
    }

    #[test]
    fn queue_in_order_bounded_then_end() {
        let q = InputQueue::new(8);
        assert_eq!(take_all(&q, 4).1, Taken::Empty);
        assert_eq!(q.push(b"hello"), 5);
        assert_eq!(q.push(b"world"), 3, "only the room left fits");
        assert_eq!(q.wait_for_room(Duration::from_millis(1)), 0);
        assert_eq!(take_all(&q, 4), (b"hell".to_vec(), Taken::Bytes(4)));
        assert_eq!(q.wait_for_room(Duration::ZERO), 4);
        assert_eq!(take_all(&q, 0), (Vec::new(), Taken::Empty));
        q.end();
        assert_eq!(take_all(&q, 100), (b"owor".to_vec(), Taken::Bytes(4)));
        assert_eq!(take_all(&q, 100).1, Taken::End);
        assert_eq!(take_all(&q, 0).1, Taken::End);
        assert_eq!(q.totals(), (8, 8));
    }

    #[test]
    fn queue_keeps_bytes_a_failed_delivery_did_not_take() {
        let q = InputQueue::new(16);
        q.push(b"abc");
        assert_eq!(q.take(2, |_| Err("bad address")), Err("bad address"));
        assert_eq!(take_all(&q, 16), (b"abc".to_vec(), Taken::Bytes(3)));
    }

    #[test]
    fn queue_wraps_around() {
        let q = InputQueue::new(5);
        let mut all = Vec::new();
        for chunk in [&b"ab"[..], b"cd", b"ef", b"gh"] {
            assert_eq!(q.push(chunk), 2);
            let (got, _) = take_all(&q, 1);
            all.extend(got);
        }
        while let (got, Taken::Bytes(_)) = take_all(&q, 3) {
            all.extend(got);
        }
        assert_eq!(all, b"abcdefgh");
    }

    #[test]
    fn push_all_waits_for_the_guest_and_loses_nothing() {
        let q = Arc::new(InputQueue::new(3));
        let stop = AtomicBool::new(false);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let reader = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 1000 {
                    let (b, _) = take_all(&q, 2);
                    got.extend(b);
                    std::thread::yield_now();
                }
                got
            })
        };
        assert_eq!(q.push_all(&data, &stop), 1000);
        assert_eq!(reader.join().unwrap(), data);
        // Stopped while full: gives up instead of waiting for ever.
        q.push(b"xyz");
        stop.store(true, Ordering::SeqCst);
        assert_eq!(q.push_all(b"more", &stop), 0);
    }

    fn filter_all(f: &mut EscapeFilter, input: &[u8]) -> (Vec<u8>, Vec<EscapeCommand>) {
        let (mut out, mut cmds) = (Vec::new(), Vec::new());
        let mut rest = input;
        loop {
            let (c, used) = f.filter(rest, &mut out);
            rest = &rest[used..];
            match c {
                Some(c) => cmds.push(c),
                None => return (out, cmds),
            }
        }
    }

    #[test]
    fn escape_quit_help_and_literal_ctrl_a() {
        let mut f = EscapeFilter::default();
        assert_eq!(
            filter_all(&mut f, b"ab\x03c"),
            (b"ab\x03c".to_vec(), vec![])
        );
        assert_eq!(
            filter_all(&mut f, b"1\x01x2"),
            (b"12".to_vec(), vec![EscapeCommand::Quit])
        );
        let mut out = Vec::new();
        assert_eq!(
            f.filter(b"3\x01x4", &mut out),
            (Some(EscapeCommand::Quit), 3),
            "stops right after the command"
        );
        assert_eq!(out, b"3");
        let mut f = EscapeFilter::default();
        assert_eq!(filter_all(&mut f, b"\x01\x01"), (vec![1], vec![]));
        assert_eq!(filter_all(&mut f, b"\x01a"), (b"\x01a".to_vec(), vec![]));
        assert_eq!(
            filter_all(&mut f, b"\x01hq\x01?"),
            (
                b"q".to_vec(),
                vec![EscapeCommand::Help, EscapeCommand::Help]
            )
        );
        assert_eq!(
            filter_all(&mut f, b"\x01X").1,
            vec![EscapeCommand::Quit],
            "X works too"
        );
    }

    #[test]
    fn escape_split_across_reads() {
        let mut f = EscapeFilter::default();
        assert_eq!(filter_all(&mut f, b"ls\x01"), (b"ls".to_vec(), vec![]));
        assert_eq!(
            filter_all(&mut f, b"x"),
            (vec![], vec![EscapeCommand::Quit])
        );
        let mut f = EscapeFilter::default();
        assert_eq!(filter_all(&mut f, b"\x01").0, b"");
        assert_eq!(filter_all(&mut f, b"y").0, b"\x01y");
        filter_all(&mut f, b"\x01");
        let mut out = Vec::new();
        f.finish(&mut out);
        assert_eq!(out, [ESCAPE_PREFIX], "a Ctrl-A at the end of input is kept");
    }

    #[test]
    fn reader_forwards_a_pipe_and_its_end() {
        let input = ConsoleInput::new(false).unwrap();
        let (r, mut w) = pipe();
        std::io::Write::write_all(&mut w, b"hello\n\x01xworld\n").unwrap();
        drop(w);
        let notified = AtomicU64::new(0);
        input.read_loop(r.as_raw_fd(), &|| {
            notified.fetch_add(1, Ordering::SeqCst);
        });
        let (got, _) = take_all(&input.queue, 100);
        assert_eq!(got, b"hello\n\x01xworld\n", "no escapes on a pipe");
        assert_eq!(take_all(&input.queue, 100).1, Taken::End);
        assert!(notified.load(Ordering::SeqCst) >= 2, "arrival and end");
        assert!(input.quit.read().is_err(), "no quit");
    }

    #[test]
    fn reader_quits_on_the_escape_of_a_terminal() {
        let input = ConsoleInput::new(true).unwrap();
        let (r, mut w) = pipe();
        std::io::Write::write_all(&mut w, b"ab\x01\x01c\x01xnever").unwrap();
        input.read_loop(r.as_raw_fd(), &|| {});
        assert_eq!(input.quit.read().unwrap(), 1);
        assert_eq!(take_all(&input.queue, 100).0, b"ab\x01c");
        assert_eq!(take_all(&input.queue, 100).1, Taken::Empty, "not ended");
    }

    #[test]
    fn reader_stops_when_the_run_is_over() {
        let input = Arc::new(ConsoleInput::new(false).unwrap());
        let (r, _w) = pipe();
        let t = {
            let input = Arc::clone(&input);
            std::thread::spawn(move || input.read_loop(r.as_raw_fd(), &|| {}))
        };
        std::thread::sleep(Duration::from_millis(50));
        input.stop();
        t.join().unwrap();
        assert!(!input.queue.ended());
    }

    #[test]
    fn raw_mode_clears_input_processing_and_keeps_output() {
        // SAFETY: plain data.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        t.c_iflag = libc::ICRNL | libc::IXON | libc::IUTF8;
        t.c_oflag = libc::OPOST | libc::ONLCR;
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN | libc::ECHOE;
        let r = raw_termios(t);
        assert_eq!(r.c_iflag, libc::IUTF8);
        assert_eq!(r.c_oflag, libc::OPOST | libc::ONLCR);
        assert_eq!(r.c_lflag, libc::ECHOE);
        assert_eq!((r.c_cc[libc::VMIN], r.c_cc[libc::VTIME]), (1, 0));
    }
}
