//! Reading a user program's ELF: just enough to load an x86_64
//! executable — position-dependent (`ET_EXEC`) or a PIE (`ET_DYN`; a k42
//! program's only `R_X86_64_RELATIVE` relocations, loaded at
//! [`PIE_BASE`]) — and a Linux program's interpreter (the dynamic linker,
//! `ET_DYN`, at a base the caller chooses), with every offset and size
//! checked against the file, so a damaged module is an error, never a
//! kernel fault.

use alloc::vec::Vec;

use k42_abi::syscall::{USER_BASE, USER_TOP};

/// Where a position-independent program is loaded (its addresses are
/// offsets from here).
pub const PIE_BASE: u64 = 0x0000_0100_0000_0000;

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
    /// Entry point (a PIE's already moved to its base).
    pub entry: u64,
    /// Where a PIE's addresses start (0 for a position-dependent one).
    pub base: u64,
    /// A Linux program's `PT_INTERP`: the interpreter's path's file
    /// offset and size (with its NUL), if it names one.
    pub interp: Option<(u64, u64)>,
    segments: [Option<Segment>; MAX_SEGMENTS],
    /// Whether it is position-independent (loaded at [`PIE_BASE`]).
    pub pie: bool,
    /// A PIE's relocations: (address, value to store there), sorted by
    /// address, each 8-byte aligned inside a writable segment.
    pub relocs: Vec<(u64, u64)>,
    /// Where the program headers are in memory (a Linux program's
    /// `AT_PHDR`; 0 if no segment loads them), their count and size.
    pub phdr: u64,
    pub phnum: u16,
    pub phent: u16,
}

/// How a program is to be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A k42 program: a PIE is relocated by the kernel.
    K42,
    /// A Linux program: a static PIE relocates itself (glibc's
    /// `_dl_relocate_static_pie`); one that names an interpreter
    /// (`Program::interp`) is relocated by it.
    Linux,
    /// A Linux program's interpreter (the dynamic linker): an `ET_DYN`
    /// that relocates itself and names no interpreter of its own.
    Interpreter,
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
    /// A PIE needs a dynamic linker, or a relocation this loader does not
    /// apply (only `R_X86_64_RELATIVE`), or one outside a writable
    /// segment.
    BadRelocations,
    /// An interpreter that names an interpreter, or is not `ET_DYN`.
    Interpreter,
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
    /// Check `file` (a k42 program) and find its loadable segments.
    pub fn parse(file: &[u8]) -> Result<Self, ElfError> {
        Self::parse_as(file, file.len() as u64, Kind::K42, PIE_BASE)
    }

    /// Check a program of `kind` whose first bytes are `file` (all of its
    /// headers must lie there) and whose length is `file_len`; a PIE is
    /// placed at `pie_base` (page-aligned).
    pub fn parse_as(
        file: &[u8],
        file_len: u64,
        kind: Kind,
        pie_base: u64,
    ) -> Result<Self, ElfError> {
        if file.len() < 64 || &file[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        // 64-bit, little-endian, ET_EXEC or ET_DYN, EM_X86_64.
        let e_type = u16_at(file, 16);
        if file[4] != 2
            || file[5] != 1
            || !matches!(e_type, Some(2 | 3))
            || u16_at(file, 18) != Some(62)
        {
            return Err(ElfError::NotX86_64Executable);
        }
        let pie = e_type == Some(3);
        if kind == Kind::Interpreter && !pie {
            return Err(ElfError::Interpreter);
        }
        let base = if pie { pie_base } else { 0 };
        let bad = ElfError::BadHeaders;
        let entry = u64_at(file, 24).ok_or(bad)?.checked_add(base).ok_or(bad)?;
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
        let mut dynamic = None;
        let mut interp = None;
        for i in 0..phnum {
            let ph = &file[phoff + i * phentsize..];
            match u32_at(ph, 0) {
                Some(1) => {} // PT_LOAD
                Some(2) => {
                    // PT_DYNAMIC: (file offset, size).
                    dynamic = Some((u64_at(ph, 8).ok_or(bad)?, u64_at(ph, 32).ok_or(bad)?));
                    continue;
                }
                // PT_INTERP: (file offset, size).
                Some(3) if kind == Kind::Linux => {
                    interp = Some((u64_at(ph, 8).ok_or(bad)?, u64_at(ph, 32).ok_or(bad)?));
                    continue;
                }
                Some(3) if kind == Kind::Interpreter => return Err(ElfError::Interpreter),
                Some(3) => return Err(ElfError::BadRelocations),
                _ => continue,
            }
            let flags = u32_at(ph, 4).ok_or(bad)?;
            let vaddr = u64_at(ph, 16).ok_or(bad)?;
            let seg = Segment {
                file_offset: u64_at(ph, 8).ok_or(bad)?,
                vaddr: vaddr.checked_add(base).ok_or(ElfError::BadSegment)?,
                file_size: u64_at(ph, 32).ok_or(bad)?,
                mem_size: u64_at(ph, 40).ok_or(bad)?,
                writable: flags & 2 != 0,
                executable: flags & 1 != 0,
            };
            let file_end = seg.file_offset.checked_add(seg.file_size);
            let mem_end = seg.vaddr.checked_add(seg.mem_size);
            if seg.file_size > seg.mem_size
                || file_end.is_none_or(|e| e > file_len)
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
        // The program headers in memory: in the segment whose file range
        // holds them.
        let phdr = segments
            .iter()
            .flatten()
            .find(|s| {
                s.file_offset <= phoff as u64
                    && (phoff + phnum * phentsize) as u64 <= s.file_offset + s.file_size
            })
            .map_or(0, |s| s.vaddr + (phoff as u64 - s.file_offset));
        let mut p = Self {
            entry,
            base,
            interp,
            segments,
            pie,
            relocs: Vec::new(),
            phdr,
            phnum: phnum as u16,
            phent: phentsize as u16,
        };
        if !p
            .segments()
            .any(|s| s.executable && (s.vaddr..s.vaddr + s.mem_size).contains(&entry))
        {
            return Err(ElfError::EntryOutsideSegments);
        }
        if pie
            && kind == Kind::K42
            && let Some((off, size)) = dynamic
        {
            p.relocs = p.relocations(file, off, size)?;
        }
        Ok(p)
    }

    /// A PIE's `R_X86_64_RELATIVE` relocations, from its dynamic section
    /// at file offset `off` (`size` bytes).
    fn relocations(&self, file: &[u8], off: u64, size: u64) -> Result<Vec<(u64, u64)>, ElfError> {
        const DT_NULL: u64 = 0;
        const DT_RELA: u64 = 7;
        const DT_RELASZ: u64 = 8;
        const DT_RELAENT: u64 = 9;
        const DT_REL: u64 = 17;
        const DT_RELR: u64 = 36;
        const R_X86_64_NONE: u64 = 0;
        const R_X86_64_RELATIVE: u64 = 8;
        let bad = ElfError::BadRelocations;
        let dynamic = file
            .get(off as usize..off.checked_add(size).ok_or(bad)? as usize)
            .ok_or(bad)?;
        let (mut rela, mut relasz, mut relaent) = (None, 0, 24);
        for d in dynamic.chunks_exact(16) {
            let (tag, val) = (u64_at(d, 0).ok_or(bad)?, u64_at(d, 8).ok_or(bad)?);
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(val),
                DT_RELASZ => relasz = val,
                DT_RELAENT => relaent = val,
                DT_REL | DT_RELR if val != 0 => return Err(bad),
                _ => {}
            }
        }
        let Some(rela) = rela else {
            return Ok(Vec::new());
        };
        if relaent != 24 {
            return Err(bad);
        }
        // The table's file offset, through the segment that holds it.
        let at = rela.checked_add(PIE_BASE).ok_or(bad)?;
        let seg = self
            .segments()
            .find(|s| at >= s.vaddr && at.saturating_add(relasz) <= s.vaddr + s.file_size)
            .ok_or(bad)?;
        let start = (seg.file_offset + (at - seg.vaddr)) as usize;
        let table = file.get(start..start + relasz as usize).ok_or(bad)?;
        let mut relocs = Vec::with_capacity(table.len() / 24);
        for r in table.chunks_exact(24) {
            let offset = u64_at(r, 0).ok_or(bad)?;
            let kind = u64_at(r, 8).ok_or(bad)? & 0xffff_ffff;
            let addend = u64_at(r, 16).ok_or(bad)?;
            match kind {
                R_X86_64_NONE => continue,
                R_X86_64_RELATIVE => {}
                _ => return Err(bad),
            }
            let va = offset.checked_add(PIE_BASE).ok_or(bad)?;
            let inside = self
                .segments()
                .any(|s| s.writable && va >= s.vaddr && va + 8 <= s.vaddr + s.mem_size);
            if !va.is_multiple_of(8) || !inside {
                return Err(bad);
            }
            relocs.push((va, PIE_BASE.wrapping_add(addend)));
        }
        relocs.sort_unstable_by_key(|r| r.0);
        Ok(relocs)
    }

    /// The loadable segments.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().flatten()
    }
}
