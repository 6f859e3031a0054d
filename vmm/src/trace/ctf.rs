//! CTF 1.8: the trace k42vmm writes with `--trace DIR`, and the reader
//! that `trace stats` and `trace export` use.
//!
//! ```text
//! DIR/metadata   TSDL text: trace (little-endian, UUID), env (vCPUs, TSC
//!                frequency, catalogue hash), clock "tsc" at the guest TSC
//!                frequency, one stream class, one event class per
//!                catalogue entry
//! DIR/vcpuN      one stream per vCPU: a packet per guest sub-buffer
//!
//! packet:  header   magic u32 | uuid [16]u8 | stream_id u32 | vcpu u64     32 bytes
//!          context  timestamp_begin u64 | timestamp_end u64 |               56 bytes
//!                   content_size u64 (bits) | packet_size u64 (bits) |
//!                   packet_seq_num u64 | events_discarded u64 |
//!                   cpu_id u32 | (4 bytes to align the events)
//!          events   copied verbatim from the guest sub-buffer
//! ```
//!
//! The event header TSDL declares is the guest's own header word: 32-bit
//! TSC and 16-bit id, the length byte being alignment padding (every
//! field is 64-bit aligned); id 0xffff selects the variant that holds the
//! real id and the full 64-bit TSC in the next two words (LTTng's
//! compact/extended header). Events are copied verbatim.
//! `events_discarded` is the guest's lost count when the sub-buffer was
//! entered; a last, empty packet carries the final count.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use k42_abi::trace::{EVENTS, FieldType, catalogue_hash};
use k42_trace_reader::Events;

use super::TraceError;

/// `magic` of every packet header.
pub const PACKET_MAGIC: u32 = 0xc1fc_1fc1;
/// Bytes of packet header and context before the first event.
pub const PACKET_PREFIX: u64 = 88;
/// Bits of packet header and context as TSDL declares them: the last 4
/// bytes of the prefix are the alignment of the first event header.
pub const DECLARED_PREFIX_BITS: u64 = 84 * 8;

/// What the metadata says about the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceMeta {
    pub vcpus: u32,
    pub tsc_khz: u64,
    pub uuid: [u8; 16],
}

impl TraceMeta {
    /// Metadata for a new trace, with a random UUID.
    pub fn new(vcpus: u32, tsc_khz: u64) -> Self {
        let mut uuid = [0u8; 16];
        let random = File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut uuid));
        if random.is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            uuid = (t ^ (std::process::id() as u128) << 64).to_le_bytes();
        }
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        Self {
            vcpus,
            tsc_khz,
            uuid,
        }
    }

    /// The UUID as text.
    pub fn uuid_text(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// The TSDL metadata of a trace.
pub fn metadata(meta: &TraceMeta) -> String {
    let mut m = String::new();
    let uuid = meta.uuid_text();
    let _ = write!(
        m,
        r#"/* CTF 1.8 */

typealias integer {{ size = 8; align = 8; signed = false; }} := uint8_t;
typealias integer {{ size = 16; align = 8; signed = false; }} := uint16_t;
typealias integer {{ size = 32; align = 8; signed = false; }} := uint32_t;
typealias integer {{ size = 64; align = 8; signed = false; }} := uint64_t;

trace {{
	major = 1;
	minor = 8;
	uuid = "{uuid}";
	byte_order = le;
	packet.header := struct {{
		uint32_t magic;
		uint8_t uuid[16];
		uint32_t stream_id;
		uint64_t stream_instance_id;
	}};
}};

env {{
	domain = "k42";
	tracer_name = "k42vmm";
	tracer_version = "{version}";
	k42_abi = {abi};
	k42_vcpus = {vcpus};
	k42_tsc_khz = {khz};
	k42_catalogue = "{cat:#018x}";
}};

clock {{
	name = "tsc";
	uuid = "{uuid}";
	description = "guest TSC";
	freq = {hz};
	precision = 1;
	offset_s = 0;
	offset = 0;
	absolute = false;
}};

typealias integer {{ size = 32; align = 8; signed = false; map = clock.tsc.value; }} := uint32_tsc_t;
typealias integer {{ size = 64; align = 8; signed = false; map = clock.tsc.value; }} := uint64_tsc_t;
typealias integer {{ size = 64; align = 64; signed = false; map = clock.tsc.value; }} := uint64_tsc_word_t;
typealias integer {{ size = 16; align = 64; signed = false; }} := uint16_word_t;

stream {{
	id = 0;
	packet.context := struct {{
		uint64_tsc_t timestamp_begin;
		uint64_tsc_t timestamp_end;
		uint64_t content_size;
		uint64_t packet_size;
		uint64_t packet_seq_num;
		uint64_t events_discarded;
		uint32_t cpu_id;
	}};
	event.header := struct {{
		uint32_tsc_t timestamp;
		enum : uint16_t {{ compact = 0 ... 65534, extended = 65535 }} id;
		variant <id> {{
			struct {{ }} compact;
			struct {{ uint16_word_t id; uint64_tsc_word_t timestamp; }} extended;
		}} v;
	}} align(64);
}};
"#,
        version = env!("CARGO_PKG_VERSION"),
        abi = k42_abi::ABI_VERSION,
        vcpus = meta.vcpus,
        khz = meta.tsc_khz,
        hz = meta.tsc_khz * 1000,
        cat = catalogue_hash(),
    );
    for e in EVENTS {
        let _ = write!(
            m,
            "\nevent {{\n\tname = \"{}\";\n\tid = {};\n\tstream_id = 0;\n\tfields := struct {{\n",
            e.name, e.id
        );
        for f in e.fields {
            let (signed, base) = match f.ty {
                FieldType::U64 | FieldType::Syscall | FieldType::LinuxSyscall => ("false", 10),
                FieldType::I64 => ("true", 10),
                FieldType::Hex => ("false", 16),
            };
            let int =
                format!("integer {{ size = 64; align = 64; signed = {signed}; base = {base}; }}");
            let labels: Option<Vec<String>> = match f.ty {
                // An enumeration, so that babeltrace2 prints the call's name.
                FieldType::Syscall => Some(
                    k42_abi::syscall::Syscall::ALL
                        .iter()
                        .map(|c| format!("\"{}\" = {}", c.name(), *c as u64))
                        .collect(),
                ),
                FieldType::LinuxSyscall => Some(
                    k42_abi::trace::linux_syscalls()
                        .map(|(nr, name)| format!("\"{name}\" = {nr}"))
                        .collect(),
                ),
                _ => None,
            };
            if let Some(labels) = labels {
                let _ = writeln!(
                    m,
                    "\t\tenum : {int} {{ {} }} {};",
                    labels.join(", "),
                    f.name
                );
            } else {
                let _ = writeln!(m, "\t\t{int} {};", f.name);
            }
        }
        m.push_str("\t};\n};\n");
    }
    m
}

/// Create the trace directory (or accept an empty one).
pub fn create_dir(dir: &Path) -> Result<(), TraceError> {
    let err = |m: String| TraceError::Dir(dir.to_path_buf(), m);
    if dir.exists() {
        if !dir.is_dir() {
            return Err(err("exists and is not a directory".into()));
        }
        let mut entries = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
        if entries.next().is_some() {
            return Err(err(
                "is not empty; give a new or empty directory for the trace".into(),
            ));
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))
}

/// Write `DIR/metadata`.
pub fn write_metadata(dir: &Path, meta: &TraceMeta) -> Result<(), TraceError> {
    let path = dir.join("metadata");
    std::fs::write(&path, metadata(meta)).map_err(|e| TraceError::Write(path, e))
}

/// The file of vCPU `vcpu`'s stream.
pub fn stream_path(dir: &Path, vcpu: u32) -> PathBuf {
    dir.join(format!("vcpu{vcpu}"))
}

/// Appends packets to one vCPU's stream file.
pub struct StreamWriter {
    path: PathBuf,
    out: BufWriter<File>,
    vcpu: u32,
    uuid: [u8; 16],
    seq: u64,
    discarded: u64,
    last_tsc: u64,
}

impl StreamWriter {
    /// Create vCPU `vcpu`'s stream file in `dir`.
    pub fn create(dir: &Path, vcpu: u32, meta: &TraceMeta) -> Result<Self, TraceError> {
        let path = stream_path(dir, vcpu);
        let f = File::create(&path).map_err(|e| TraceError::Write(path.clone(), e))?;
        Ok(Self {
            path,
            out: BufWriter::with_capacity(256 << 10, f),
            vcpu,
            uuid: meta.uuid,
            seq: 0,
            discarded: 0,
            last_tsc: 0,
        })
    }

    /// Append a packet of `words` (whole, checked events) whose first
    /// event is at `tsc_begin` and last at `tsc_end`; `lost` is the
    /// guest's lost count at its start.
    pub fn packet(
        &mut self,
        tsc_begin: u64,
        tsc_end: u64,
        lost: u64,
        words: &[u64],
    ) -> Result<(), TraceError> {
        // Keep the clock and the discarded count monotonic whatever the
        // guest wrote.
        let begin = tsc_begin.max(self.last_tsc);
        let end = tsc_end.max(begin);
        self.discarded = self.discarded.max(lost);
        let packet_bits = (PACKET_PREFIX + words.len() as u64 * 8) * 8;
        // Content ends where the last declared field ends, or a reader
        // would look for another event in the padding after it.
        let content_bits = if words.is_empty() {
            DECLARED_PREFIX_BITS
        } else {
            packet_bits - trailing_padding_bits(words, begin)
        };
        let mut buf = Vec::with_capacity(PACKET_PREFIX as usize + words.len() * 8);
        buf.extend_from_slice(&PACKET_MAGIC.to_le_bytes());
        buf.extend_from_slice(&self.uuid);
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&(self.vcpu as u64).to_le_bytes());
        for v in [
            begin,
            end,
            content_bits,
            packet_bits,
            self.seq,
            self.discarded,
        ] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&self.vcpu.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        debug_assert_eq!(buf.len() as u64, PACKET_PREFIX);
        for w in words {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        self.out
            .write_all(&buf)
            .map_err(|e| TraceError::Write(self.path.clone(), e))?;
        self.seq += 1;
        self.last_tsc = end;
        Ok(())
    }

    /// End the stream: an empty packet if `lost` grew since the last
    /// packet (so readers see every discarded event), then flush.
    pub fn finish(&mut self, lost: u64) -> Result<(), TraceError> {
        if lost > self.discarded {
            let t = self.last_tsc;
            self.packet(t, t, lost, &[])?;
        }
        self.out
            .flush()
            .map_err(|e| TraceError::Write(self.path.clone(), e))
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.seq
    }
}

/// Bits at the end of `words` that no TSDL field covers: after a compact
/// event without payload, the header word's length byte and the byte
/// after it. A CTF reader must not see them as content, or it would try
/// to decode another event there.
fn trailing_padding_bits(words: &[u64], tsc_begin: u64) -> u64 {
    match Events::new(words, tsc_begin).filter_map(Result::ok).last() {
        Some(e) if !e.extended && e.payload.is_empty() => 16,
        _ => 0,
    }
}

/// One packet read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketData {
    pub tsc_begin: u64,
    pub tsc_end: u64,
    pub seq: u64,
    /// The stream's discarded-events count at this packet.
    pub discarded: u64,
    pub words: Vec<u64>,
}

impl PacketData {
    /// The packet's events.
    pub fn events(&self) -> Events<'_> {
        Events::new(&self.words, self.tsc_begin)
    }
}

/// One vCPU's stream read back.
#[derive(Clone, Debug, Default)]
pub struct StreamData {
    pub vcpu: u32,
    pub packets: Vec<PacketData>,
}

impl StreamData {
    /// Events discarded in this stream (the last packet's count).
    pub fn discarded(&self) -> u64 {
        self.packets.last().map_or(0, |p| p.discarded)
    }
}

/// A whole trace read back.
#[derive(Clone, Debug)]
pub struct TraceData {
    pub meta: TraceMeta,
    /// One per vCPU, in vCPU order (empty when the vCPU logged nothing).
    pub streams: Vec<StreamData>,
}

fn env_value<'a>(metadata: &'a str, key: &str) -> Option<&'a str> {
    metadata.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_end_matches(';').trim().trim_matches('"'))
    })
}

/// Read a trace that `k42vmm run --trace` wrote.
pub fn read_trace(dir: &Path) -> Result<TraceData, TraceError> {
    let err = |m: String| TraceError::Read(dir.to_path_buf(), m);
    if !dir.is_dir() {
        return Err(err("no such directory".into()));
    }
    let text = std::fs::read_to_string(dir.join("metadata"))
        .map_err(|e| err(format!("cannot read its metadata: {e}")))?;
    if !text.starts_with("/* CTF 1.8 */") || env_value(&text, "tracer_name") != Some("k42vmm") {
        return Err(err("is not a CTF trace written by k42vmm".into()));
    }
    let cat = env_value(&text, "k42_catalogue").unwrap_or("");
    if cat != format!("{:#018x}", catalogue_hash()) {
        return Err(err(
            "was written with another event catalogue; read it with the k42vmm that wrote it"
                .into(),
        ));
    }
    let num = |key: &str| -> Result<u64, TraceError> {
        env_value(&text, key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("its metadata has no {key}")))
    };
    let vcpus = num("k42_vcpus")? as u32;
    let tsc_khz = num("k42_tsc_khz")?;
    let uuid_text = env_value(&text, "uuid").unwrap_or("").replace('-', "");
    let mut uuid = [0u8; 16];
    for (i, b) in uuid.iter_mut().enumerate() {
        *b = uuid_text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| err("its metadata has no valid UUID".into()))?;
    }
    let meta = TraceMeta {
        vcpus,
        tsc_khz,
        uuid,
    };
    let mut streams = Vec::new();
    for vcpu in 0..vcpus {
        let path = stream_path(dir, vcpu);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(format!("cannot read {}: {e}", path.display()))),
        };
        let packets = parse_stream(&bytes, &meta, vcpu)
            .map_err(|m| err(format!("stream vcpu{vcpu}: {m}")))?;
        streams.push(StreamData { vcpu, packets });
    }
    Ok(TraceData { meta, streams })
}

fn parse_stream(bytes: &[u8], meta: &TraceMeta, vcpu: u32) -> Result<Vec<PacketData>, String> {
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let mut packets = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let p = &bytes[at..];
        if p.len() < PACKET_PREFIX as usize {
            return Err(format!("truncated packet header at byte {at}"));
        }
        if u32_at(p, 0) != PACKET_MAGIC || p[4..20] != meta.uuid || u64_at(p, 24) != vcpu as u64 {
            return Err(format!("bad packet header at byte {at}"));
        }
        let content_bits = u64_at(p, 48);
        let packet_bits = u64_at(p, 56);
        let len = (packet_bits / 8) as usize;
        let content_end = content_bits.div_ceil(64) as usize * 8;
        if content_bits % 8 != 0
            || content_end as u64 > packet_bits / 8
            || len < PACKET_PREFIX as usize
            || len > p.len()
            || content_end < PACKET_PREFIX as usize
        {
            return Err(format!("bad packet size at byte {at}"));
        }
        let words = p[PACKET_PREFIX as usize..content_end]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        packets.push(PacketData {
            tsc_begin: u64_at(p, 32),
            tsc_end: u64_at(p, 40),
            seq: u64_at(p, 64),
            discarded: u64_at(p, 72),
            words,
        });
        at += len;
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k42_abi::trace::{EXTENDED_ID, EventHeader, ev};

    #[test]
    fn metadata_declares_every_event() {
        let meta = TraceMeta::new(4, 2_000_000);
        let m = metadata(&meta);
        assert!(m.starts_with("/* CTF 1.8 */"));
        assert!(m.contains("freq = 2000000000;"));
        assert!(m.contains(&meta.uuid_text()));
        for e in EVENTS {
            assert!(m.contains(&format!("name = \"{}\";", e.name)), "{}", e.name);
        }
        // Field names must not be TSDL keywords.
        let keywords = [
            "align",
            "const",
            "char",
            "clock",
            "double",
            "enum",
            "env",
            "event",
            "float",
            "integer",
            "int",
            "long",
            "short",
            "signed",
            "stream",
            "string",
            "struct",
            "trace",
            "typealias",
            "typedef",
            "unsigned",
            "variant",
            "void",
        ];
        for e in EVENTS {
            for f in e.fields {
                assert!(!keywords.contains(&f.name), "{}: {}", e.name, f.name);
            }
        }
        assert_eq!(meta.uuid_text().len(), 36);
    }

    #[test]
    fn packets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        create_dir(&path).unwrap();
        let meta = TraceMeta::new(2, 1_000_000);
        write_metadata(&path, &meta).unwrap();
        let e = ev::timer::fire(7);
        let mut words = vec![EventHeader::new(1005, e.id, 2).0, 7];
        words.extend([
            EventHeader::new(1 << 33, EXTENDED_ID, 4).0,
            e.id as u64,
            1 << 33,
            8,
        ]);
        let mut w = StreamWriter::create(&path, 1, &meta).unwrap();
        w.packet(1000, 1 << 33, 0, &words).unwrap();
        w.finish(5).unwrap();
        drop(w);
        let t = read_trace(&path).unwrap();
        assert_eq!(t.meta, meta);
        assert!(t.streams[0].packets.is_empty());
        let s = &t.streams[1];
        assert_eq!(s.packets.len(), 2, "data packet and the final lost count");
        assert_eq!(s.discarded(), 5);
        let evs: Vec<(u64, u64)> = s.packets[0]
            .events()
            .map(|e| {
                let e = e.unwrap();
                (e.tsc, e.payload[0])
            })
            .collect();
        assert_eq!(evs, vec![(1005, 7), (1 << 33, 8)]);
        assert_eq!(s.packets[1].tsc_begin, 1 << 33);
        assert!(s.packets[1].words.is_empty());
        // The empty packet's content ends with the declared context.
        let raw = std::fs::read(stream_path(&path, 1)).unwrap();
        let second = (PACKET_PREFIX + 6 * 8) as usize;
        let content = u64::from_le_bytes(raw[second + 48..second + 56].try_into().unwrap());
        assert_eq!(content, DECLARED_PREFIX_BITS);
        assert!(create_dir(&path).is_err(), "a used directory is refused");
        assert!(read_trace(dir.path()).is_err(), "no metadata");
    }
}
