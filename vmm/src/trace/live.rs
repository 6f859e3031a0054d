//! Live access to a running VM's trace over a Unix socket
//! (`k42vmm run --trace-socket PATH`): the server the collector thread
//! drives, and the `trace attach`, `trace top` and `trace mask` clients.
//!
//! Protocol: JSON lines. A client sends one [`Request`]; the server
//! answers with a [`Message::Hello`] and then, depending on the request,
//! events, one-second summaries, or the new mask, and a final
//! [`Message::End`] when the VM stops.
//!
//! The server never blocks on a client: sockets are non-blocking, each
//! client has a bounded output queue, and a client that reads too slowly
//! loses events (it is told how many). Nothing a client does reaches the
//! guest except an explicit `mask` request.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k42_abi::trace::{CLASSES, catalogue_hash, event_desc};
use serde::{Deserialize, Serialize};

use super::TraceError;
use super::decode;

/// Most bytes queued for one client before its events are skipped.
const CLIENT_QUEUE_LIMIT: usize = 8 << 20;

/// What a client asks for (its first line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Stream events of the classes in `mask`.
    Attach { mask: u64 },
    /// One summary per second.
    Top,
    /// Set the guest's class mask.
    Mask { set: u64 },
}

/// One vCPU's line in a `top` summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    pub vcpu: u32,
    pub events_per_s: f64,
    /// Share of the interval the vCPU spent halted (from idle events);
    /// `None` when the idle class is off.
    pub idle: Option<f64>,
    /// Events this vCPU lost so far.
    pub lost: u64,
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First message to every client.
    Hello {
        vcpus: u32,
        tsc_khz: u64,
        /// The guest's class mask; `None` until the guest registered.
        mask: Option<u64>,
        /// `k42_abi::trace::catalogue_hash()` of the server.
        catalogue: u64,
    },
    /// One event; `id` and `words` decode with the catalogue.
    Event {
        vcpu: u32,
        ns: u64,
        id: u16,
        words: Vec<u64>,
    },
    /// Events this client missed because it read too slowly.
    Skipped { count: u64 },
    /// A one-second summary.
    Top { seconds: f64, vcpus: Vec<TopRow> },
    /// The guest's mask now.
    Mask { mask: u64 },
    /// The request was refused.
    Error { message: String },
    /// The VM stopped; nothing follows.
    End { reason: String },
}

enum Mode {
    Waiting(Vec<u8>),
    Attached(u64),
    Top,
    Done,
}

struct Client {
    stream: UnixStream,
    mode: Mode,
    out: Vec<u8>,
    skipped: u64,
    hello_sent: bool,
    closed: bool,
}

impl Client {
    fn queue(&mut self, m: &Message) {
        let mut line = serde_json::to_vec(m).expect("messages serialise");
        line.push(b'\n');
        self.out.extend_from_slice(&line);
    }

    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

/// What the server needs to know about the VM.
pub struct VmView {
    pub vcpus: u32,
    pub tsc_khz: u64,
    pub mask: Option<u64>,
}

/// The socket server.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

impl Server {
    /// Listen on `path`; a stale socket left by a k42vmm that died is
    /// replaced, a live one or any other file is refused.
    pub fn bind(path: &Path) -> Result<Self, TraceError> {
        let err = |m: String| TraceError::Socket(path.to_path_buf(), m);
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(err("exists and is not a socket".into()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(err("another k42vmm is serving this socket".into()));
            }
            std::fs::remove_file(path)
                .map_err(|e| err(format!("cannot remove stale socket: {e}")))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            clients: Vec::new(),
        })
    }

    /// Whether any client wants events.
    pub fn wants_events(&self) -> bool {
        self.clients
            .iter()
            .any(|c| matches!(c.mode, Mode::Attached(_)))
    }

    /// Whether any client wants `top` summaries.
    pub fn wants_top(&self) -> bool {
        self.clients.iter().any(|c| matches!(c.mode, Mode::Top))
    }

    /// Accept clients, read their requests, write what is queued.
    /// `set_mask` applies a mask request and returns the new mask.
    pub fn poll(&mut self, vm: &VmView, set_mask: &mut dyn FnMut(u64) -> Result<u64, String>) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            mode: Mode::Waiting(Vec::new()),
                            out: Vec::new(),
                            skipped: 0,
                            hello_sent: false,
                            closed: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        for c in &mut self.clients {
            let mut buf = [0u8; 512];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.closed = true;
                        break;
                    }
                    Ok(n) => {
                        if let Mode::Waiting(pending) = &mut c.mode {
                            pending.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.closed = true;
                        break;
                    }
                }
            }
            if let Mode::Waiting(pending) = &c.mode
                && let Some(nl) = pending.iter().position(|&b| b == b'\n')
            {
                let req = serde_json::from_slice::<Request>(&pending[..nl]);
                if !c.hello_sent {
                    c.queue(&Message::Hello {
                        vcpus: vm.vcpus,
                        tsc_khz: vm.tsc_khz,
                        mask: vm.mask,
                        catalogue: catalogue_hash(),
                    });
                    c.hello_sent = true;
                }
                c.mode = match req {
                    Ok(Request::Attach { mask }) => Mode::Attached(mask),
                    Ok(Request::Top) => Mode::Top,
                    Ok(Request::Mask { set }) => {
                        let m = match set_mask(set) {
                            Ok(mask) => Message::Mask { mask },
                            Err(message) => Message::Error { message },
                        };
                        c.queue(&m);
                        Mode::Done
                    }
                    Err(e) => {
                        c.queue(&Message::Error {
                            message: format!("bad request: {e}"),
                        });
                        Mode::Done
                    }
                };
            }
            if c.skipped > 0 && c.out.len() < CLIENT_QUEUE_LIMIT / 2 {
                let count = std::mem::take(&mut c.skipped);
                c.queue(&Message::Skipped { count });
            }
            c.flush();
        }
        self.clients
            .retain(|c| !(c.closed || matches!(c.mode, Mode::Done) && c.out.is_empty()));
    }

    /// Queue an event for the clients that want its class.
    pub fn event(&mut self, vcpu: u32, ns: u64, id: u16, words: &[u64]) {
        let bit = 1u64 << k42_abi::trace::id_class(id);
        let mut msg = None;
        for c in &mut self.clients {
            let Mode::Attached(mask) = c.mode else {
                continue;
            };
            if mask & bit == 0 {
                continue;
            }
            if c.out.len() >= CLIENT_QUEUE_LIMIT || c.skipped > 0 {
                c.skipped += 1;
                continue;
            }
            let m = msg.get_or_insert_with(|| Message::Event {
                vcpu,
                ns,
                id,
                words: words.to_vec(),
            });
            c.queue(m);
        }
    }

    /// Queue a summary for the `top` clients.
    pub fn top(&mut self, seconds: f64, rows: Vec<TopRow>) {
        let m = Message::Top {
            seconds,
            vcpus: rows,
        };
        for c in self
            .clients
            .iter_mut()
            .filter(|c| matches!(c.mode, Mode::Top))
        {
            if c.out.len() < CLIENT_QUEUE_LIMIT {
                c.queue(&m);
            }
        }
    }

    /// The VM stopped: tell every client, give them up to `patience` to
    /// take what is queued, and remove the socket.
    pub fn end(mut self, reason: &str, patience: Duration) {
        for c in &mut self.clients {
            if c.skipped > 0 {
                let count = std::mem::take(&mut c.skipped);
                c.queue(&Message::Skipped { count });
            }
            c.queue(&Message::End {
                reason: reason.to_string(),
            });
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            for c in &mut self.clients {
                c.flush();
            }
            self.clients.retain(|c| !c.closed && !c.out.is_empty());
            if self.clients.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connection to a running k42vmm's trace socket.
pub struct Connection {
    path: PathBuf,
    lines: BufReader<UnixStream>,
    /// The server's hello.
    pub vcpus: u32,
    pub tsc_khz: u64,
    pub mask: Option<u64>,
}

impl Connection {
    /// Connect to `path` and send `req`.
    pub fn open(path: &Path, req: &Request) -> Result<Self, TraceError> {
        let err = |m: String| TraceError::Attach(path.to_path_buf(), m);
        let mut stream = UnixStream::connect(path).map_err(|e| {
            err(format!(
                "no k42vmm serves this trace socket ({e}); start one with `k42vmm run --trace-socket {}`",
                path.display()
            ))
        })?;
        let mut line = serde_json::to_vec(req).expect("requests serialise");
        line.push(b'\n');
        stream
            .write_all(&line)
            .map_err(|e| err(format!("cannot send the request: {e}")))?;
        let mut c = Self {
            path: path.to_path_buf(),
            lines: BufReader::new(stream),
            vcpus: 0,
            tsc_khz: 0,
            mask: None,
        };
        match c.receive()? {
            Some(Message::Hello {
                vcpus,
                tsc_khz,
                mask,
                catalogue,
            }) => {
                if catalogue != catalogue_hash() {
                    return Err(err(
                        "the k42vmm serving this socket has another event catalogue".into(),
                    ));
                }
                c.vcpus = vcpus;
                c.tsc_khz = tsc_khz;
                c.mask = mask;
                Ok(c)
            }
            Some(other) => Err(err(format!("unexpected first message {other:?}"))),
            None => Err(err("the server closed the connection".into())),
        }
    }

    /// The next message; `None` when the server closed the connection.
    pub fn receive(&mut self) -> Result<Option<Message>, TraceError> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
                TraceError::Attach(self.path.clone(), format!("bad message from server: {e}"))
            }),
            Err(e) => Err(TraceError::Attach(
                self.path.clone(),
                format!("reading from the server: {e}"),
            )),
        }
    }
}

/// Names of the classes in `mask`, comma-separated.
pub fn mask_names(mask: u64) -> String {
    let names: Vec<&str> = CLASSES
        .iter()
        .filter(|(c, _)| mask & c.bit() != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// `k42vmm trace attach`: print events of the classes in `mask` until the
/// VM stops, `count` events were printed, or the user interrupts.
pub fn attach(
    path: &Path,
    mask: u64,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), TraceError> {
    let mut c = Connection::open(path, &Request::Attach { mask })?;
    match c.mask {
        Some(m) if m & mask != mask => eprintln!(
            "k42vmm: note: the guest does not log {} (enable with `k42vmm trace mask {} CLASSES`)",
            mask_names(mask & !m),
            path.display()
        ),
        None => eprintln!("k42vmm: note: the guest has not registered its trace buffers yet"),
        _ => {}
    }
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let Some(m) = c.receive()? else { break };
        let line = match m {
            Message::Event {
                vcpu,
                ns,
                id,
                words,
            } => match event_desc(id) {
                Some(d) if d.fields.len() == words.len() => decode::line(ns, vcpu, d, &words),
                _ => format!("vCPU {vcpu} unknown event {id:#x} {words:?}"),
            },
            Message::Skipped { count } => {
                format!("-- {count} events skipped: this client read too slowly --")
            }
            Message::End { reason } => {
                eprintln!("k42vmm: the VM stopped: {reason}");
                break;
            }
            Message::Error { message } => {
                return Err(TraceError::Attach(path.to_path_buf(), message));
            }
            _ => continue,
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
        printed += 1;
    }
    let _ = out.flush();
    Ok(())
}

/// `k42vmm trace top`: a table of per-vCPU event rates and idle shares,
/// refreshed each second, until the VM stops or `count` tables were
/// printed.
pub fn top(path: &Path, count: Option<u64>, out: &mut dyn Write) -> Result<(), TraceError> {
    let mut c = Connection::open(path, &Request::Top)?;
    let mut shown = 0u64;
    while count.is_none_or(|n| shown < n) {
        let Some(m) = c.receive()? else { break };
        match m {
            Message::Top { seconds, vcpus } => {
                let mut t = format!(
                    "k42 VM, {} vCPUs, {seconds:.0} s since tracing started\n{:>5} {:>12} {:>6} {:>10}\n",
                    c.vcpus, "vCPU", "events/s", "idle", "lost"
                );
                for r in &vcpus {
                    let idle = r
                        .idle
                        .map_or("-".to_string(), |i| format!("{:.1}%", i * 100.0));
                    t.push_str(&format!(
                        "{:>5} {:>12.0} {:>6} {:>10}\n",
                        r.vcpu, r.events_per_s, idle, r.lost
                    ));
                }
                if writeln!(out, "{t}").is_err() {
                    break;
                }
                let _ = out.flush();
                shown += 1;
            }
            Message::End { reason } => {
                eprintln!("k42vmm: the VM stopped: {reason}");
                break;
            }
            Message::Error { message } => {
                return Err(TraceError::Attach(path.to_path_buf(), message));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `k42vmm trace mask`: set the guest's class mask; returns it.
pub fn set_mask(path: &Path, mask: u64) -> Result<u64, TraceError> {
    let mut c = Connection::open(path, &Request::Mask { set: mask })?;
    loop {
        match c.receive()? {
            Some(Message::Mask { mask }) => return Ok(mask),
            Some(Message::Error { message }) => {
                return Err(TraceError::Attach(path.to_path_buf(), message));
            }
            Some(_) => {}
            None => {
                return Err(TraceError::Attach(
                    path.to_path_buf(),
                    "the server closed the connection without an answer".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips() {
        let r = Request::Attach { mask: 5 };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"attach","mask":5}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let m = Message::Event {
            vcpu: 1,
            ns: 2,
            id: 3,
            words: vec![u64::MAX],
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&s).unwrap(), m);
    }

    #[test]
    fn server_and_clients_talk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let mut server = Server::bind(&path).unwrap();
        assert!(
            Server::bind(&path).is_err(),
            "a socket being served is refused"
        );
        let vm = VmView {
            vcpus: 2,
            tsc_khz: 1_000_000,
            mask: Some(u64::MAX),
        };
        let mut masks = Vec::new();
        let p2 = path.clone();
        let attach = std::thread::spawn(move || {
            let mut out = Vec::new();
            attach(&p2, k42_abi::trace::class::timer.bit(), Some(2), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        });
        let p3 = path.clone();
        let masker = std::thread::spawn(move || set_mask(&p3, 6).unwrap());
        let t0 = Instant::now();
        let mut sent = false;
        while !attach.is_finished() || !masker.is_finished() {
            server.poll(&vm, &mut |m| {
                masks.push(m);
                Ok(m)
            });
            if server.wants_events() && !sent {
                let idle = k42_abi::trace::ev::idle::enter();
                server.event(0, 5, idle.id, &idle.words);
                for late in [7, 9] {
                    let e = k42_abi::trace::ev::timer::fire(late);
                    server.event(1, 1_000_000_000 + late, e.id, &e.words);
                }
                sent = true;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "clients hang");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(masker.join().unwrap(), 6);
        assert_eq!(masks, vec![6]);
        let text = attach.join().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("timer:fire late=7"), "{text}");
        assert!(!text.contains("idle"), "filtered out by class");
        server.end("done", Duration::from_millis(100));
        assert!(!path.exists(), "the socket is removed at the end");
    }

    #[test]
    fn stale_sockets_are_replaced_and_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let s = Server::bind(&path).expect("stale socket replaced");
        drop(s);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(Server::bind(&file), Err(TraceError::Socket(..))));
        let missing = dir.path().join("nobody");
        assert!(matches!(
            Connection::open(&missing, &Request::Top),
            Err(TraceError::Attach(..))
        ));
    }
}
