//! Reading a user program's ELF: just enough to load a static x86_64
//! executable, with every offset and size checked against the file, so a
//! damaged module is an error, never a kernel fault.

use k42_abi::syscall::{USER_BASE, USER_TOP};

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub writable: bool,
    pub executable: bool,
}

/// A checked program.
pub struct Program {
    pub entry: u64,
    segments: [Option<Segment>; MAX_SEGMENTS],
}

const MAX_SEGMENTS: usize = 8;

/// What is wrong with a program file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    NotX86_64Executable,
    BadHeaders,
    TooManySegments,
    BadSegment,
    EntryOutsideSegments,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

impl Program {
    /// Check `file` and find its loadable segments.
    pub fn parse(file: &[u8]) -> Result<Self, ElfError> {
        if file.len() < 64 || &file[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        // 64-bit, little-endian, ET_EXEC, EM_X86_64.
        if file[4] != 2
            || file[5] != 1
            || u16_at(file, 16) != Some(2)
            || u16_at(file, 18) != Some(62)
        {
            return Err(ElfError::NotX86_64Executable);
        }
        let bad = ElfError::BadHeaders;
        let entry = u64_at(file, 24).ok_or(bad)?;
        let phoff = u64_at(file, 32).ok_or(bad)? as usize;
        let phentsize = u16_at(file, 54).ok_or(bad)? as usize;
        let phnum = u16_at(file, 56).ok_or(bad)? as usize;
        if phentsize < 56
            || phoff
                .checked_add(phnum * phentsize)
                .is_none_or(|end| end > file.len())
        {
            return Err(bad);
        }
        let mut segments = [None; MAX_SEGMENTS];
        let mut n = 0;
        for i in 0..phnum {
            let ph = &file[phoff + i * phentsize..];
            if u32_at(ph, 0) != Some(1) {
                continue; // not PT_LOAD
            }
            let flags = u32_at(ph, 4).ok_or(bad)?;
            let seg = Segment {
                file_offset: u64_at(ph, 8).ok_or(bad)?,
                vaddr: u64_at(ph, 16).ok_or(bad)?,
                file_size: u64_at(ph, 32).ok_or(bad)?,
                mem_size: u64_at(ph, 40).ok_or(bad)?,
                writable: flags & 2 != 0,
                executable: flags & 1 != 0,
            };
            let file_end = seg.file_offset.checked_add(seg.file_size);
            let mem_end = seg.vaddr.checked_add(seg.mem_size);
            if seg.file_size > seg.mem_size
                || file_end.is_none_or(|e| e > file.len() as u64)
                || seg.vaddr < USER_BASE
                || mem_end.is_none_or(|e| e > USER_TOP)
            {
                return Err(ElfError::BadSegment);
            }
            if seg.mem_size == 0 {
                continue;
            }
            if n == MAX_SEGMENTS {
                return Err(ElfError::TooManySegments);
            }
            segments[n] = Some(seg);
            n += 1;
        }
        let p = Self { entry, segments };
        if !p
            .segments()
            .any(|s| s.executable && (s.vaddr..s.vaddr + s.mem_size).contains(&entry))
        {
            return Err(ElfError::EntryOutsideSegments);
        }
        Ok(p)
    }

    /// The loadable segments.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().flatten()
    }
}
