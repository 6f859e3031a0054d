//! Events named and typed by the catalogue in `k42_abi::trace`: checking
//! a framed event against its descriptor, and showing it as text or JSON.

use k42_abi::trace::{EventDesc, FieldType, event_desc};
use k42_trace_reader::RawEvent;
use serde_json::Value;

/// Why an event cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The catalogue has no event with this id.
    UnknownId(u16),
    /// The payload length differs from the descriptor's field count.
    WrongLength { id: u16, words: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownId(id) => write!(f, "unknown event id {id:#x}"),
            DecodeError::WrongLength { id, words } => {
                write!(f, "event id {id:#x} with {words} payload words")
            }
        }
    }
}

/// The descriptor of `e`, checked against its payload.
pub fn describe(e: &RawEvent) -> Result<&'static EventDesc, DecodeError> {
    let d = event_desc(e.id).ok_or(DecodeError::UnknownId(e.id))?;
    if d.fields.len() != e.payload.len() {
        return Err(DecodeError::WrongLength {
            id: e.id,
            words: e.payload.len(),
        });
    }
    Ok(d)
}

/// One field's value as JSON (numbers; signed fields as signed).
pub fn value_json(ty: FieldType, word: u64) -> Value {
    match ty {
        FieldType::I64 => Value::from(word as i64),
        FieldType::U64 | FieldType::Hex => Value::from(word),
        FieldType::Syscall | FieldType::LinuxSyscall => match ty.name_of(word) {
            Some(name) => Value::from(name),
            None => Value::from(word),
        },
    }
}

/// One field's value as text.
pub fn value_text(ty: FieldType, word: u64) -> String {
    match ty {
        FieldType::U64 => word.to_string(),
        FieldType::I64 => (word as i64).to_string(),
        FieldType::Hex => format!("{word:#x}"),
        FieldType::Syscall | FieldType::LinuxSyscall => match ty.name_of(word) {
            Some(name) => name.to_string(),
            None => format!("#{word}"),
        },
    }
}

/// `name=value` pairs, space-separated.
pub fn fields_text(d: &EventDesc, payload: &[u64]) -> String {
    d.fields
        .iter()
        .zip(payload)
        .map(|(f, w)| format!("{}={}", f.name, value_text(f.ty, *w)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line for `trace attach`: time in seconds, vCPU, name, fields.
pub fn line(ns: u64, vcpu: u32, d: &EventDesc, payload: &[u64]) -> String {
    let fields = fields_text(d, payload);
    format!(
        "[{:>6}.{:09}] vCPU {:<3} {}{}{}",
        ns / 1_000_000_000,
        ns % 1_000_000_000,
        vcpu,
        d.name,
        if fields.is_empty() { "" } else { " " },
        fields
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k42_abi::trace::ev;

    #[test]
    fn events_decode_and_print() {
        let e = ev::hypercall::exit(1, -3);
        let raw = RawEvent {
            tsc: 0,
            id: e.id,
            payload: &e.words,
            extended: false,
        };
        let d = describe(&raw).unwrap();
        assert_eq!(fields_text(d, &e.words), "nr=1 result=-3");
        assert_eq!(
            line(1_500_000_000, 2, d, &e.words),
            "[     1.500000000] vCPU 2   hypercall:exit nr=1 result=-3"
        );
        let v = ev::interrupt::entry(0x30);
        let d = event_desc(v.id).unwrap();
        assert_eq!(fields_text(d, &v.words), "vector=0x30");
        assert_eq!(value_json(FieldType::I64, -1i64 as u64), Value::from(-1));
        let c = ev::syscall::exit(k42_abi::syscall::Syscall::FileRead as u64, -2);
        let d = event_desc(c.id).unwrap();
        assert_eq!(fields_text(d, &c.words), "nr=file.read result=-2");
        assert_eq!(value_text(FieldType::Syscall, 9999), "#9999");
        let l = ev::linux::exit(3, 257, -2);
        let d = event_desc(l.id).unwrap();
        assert_eq!(fields_text(d, &l.words), "pid=3 nr=openat result=-2");
        assert_eq!(value_text(FieldType::LinuxSyscall, 9999), "#9999");
        assert_eq!(value_json(FieldType::LinuxSyscall, 0), Value::from("read"));
        assert_eq!(
            value_json(FieldType::Syscall, 4),
            Value::from("program.null")
        );
        let short = RawEvent {
            tsc: 0,
            id: v.id,
            payload: &[],
            extended: false,
        };
        assert!(matches!(
            describe(&short),
            Err(DecodeError::WrongLength { .. })
        ));
        let unknown = RawEvent {
            tsc: 0,
            id: 0x3ff,
            payload: &[],
            extended: false,
        };
        assert_eq!(describe(&unknown), Err(DecodeError::UnknownId(0x3ff)));
    }
}
