//! Checks of a kernel ELF: that it is a 64-bit x86_64 executable, that it
//! carries a k42 ABI note for this ABI version, and where it loads.

use k42_abi::note::{self, KernelAbiNote};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};
use zerocopy::FromBytes;

#[cfg(test)]
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;

/// Why a kernel cannot be booted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("the kernel is not an ELF file")]
    NotElf,
    #[error("the kernel is a 32-bit ELF; k42vmm needs a 64-bit x86_64 kernel")]
    Not64Bit,
    #[error("the kernel is an ELF for machine {0}, not x86_64")]
    WrongMachine(u16),
    #[error("the kernel ELF is not an executable (type {0})")]
    NotExecutable(u16),
    #[error("the kernel ELF is damaged: {0}")]
    Damaged(String),
    #[error(
        "the kernel carries no k42 ABI note (section {}): it is not a k42 kernel",
        note::SECTION
    )]
    NoAbiNote,
    #[error(
        "the kernel was built for shared-abi version {kernel}, but this k42vmm speaks version {vmm}: rebuild the image (make image)"
    )]
    AbiMismatch { kernel: u32, vmm: u32 },
    #[error("the kernel has no loadable segment")]
    NoSegments,
}

/// What the loader needs to know about a checked kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// Virtual entry address.
    pub entry: u64,
    /// Lowest physical load address of any PT_LOAD segment.
    pub load_start: u64,
    /// End (exclusive) of the highest PT_LOAD segment in memory.
    pub load_end: u64,
}

/// Check a kernel ELF and describe its layout.
pub fn inspect(bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(KernelError::NotElf);
    }
    if bytes[4] != ELFCLASS64 {
        return Err(KernelError::Not64Bit);
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != EM_X86_64 {
        return Err(KernelError::WrongMachine(machine));
    }
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    if e_type != ET_EXEC {
        return Err(KernelError::NotExecutable(e_type));
    }
    let file =
        ElfFile64::<Endianness>::parse(bytes).map_err(|e| KernelError::Damaged(e.to_string()))?;
    let header = file.elf_header();
    let endian = file.endian();
    let section = file
        .section_by_name(note::SECTION)
        .ok_or(KernelError::NoAbiNote)?;
    let data = section
        .data()
        .map_err(|e| KernelError::Damaged(e.to_string()))?;
    let (abi, _) = KernelAbiNote::read_from_prefix(data).map_err(|_| KernelError::NoAbiNote)?;
    if abi.magic != note::MAGIC {
        return Err(KernelError::NoAbiNote);
    }
    if abi.abi_version != k42_abi::ABI_VERSION {
        return Err(KernelError::AbiMismatch {
            kernel: abi.abi_version,
            vmm: k42_abi::ABI_VERSION,
        });
    }
    let mut load_start = u64::MAX;
    let mut load_end = 0u64;
    for ph in file.elf_program_headers() {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_memsz(endian) == 0 {
            continue;
        }
        let start = ph.p_paddr(endian);
        let end = start.checked_add(ph.p_memsz(endian)).ok_or_else(|| {
            KernelError::Damaged("a segment wraps around the address space".into())
        })?;
        if ph.p_filesz(endian) > ph.p_memsz(endian) {
            return Err(KernelError::Damaged(
                "a segment's file size exceeds its memory size".into(),
            ));
        }
        load_start = load_start.min(start);
        load_end = load_end.max(end);
    }
    if load_end == 0 {
        return Err(KernelError::NoSegments);
    }
    Ok(KernelInfo {
        entry: header.e_entry(endian),
        load_start,
        load_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_wrong_machines() {
        assert_eq!(inspect(b"#!/bin/sh\necho hi\n"), Err(KernelError::NotElf));
        let mut hdr = vec![0u8; 64];
        hdr[..4].copy_from_slice(b"\x7fELF");
        hdr[4] = ELFCLASS32;
        assert_eq!(inspect(&hdr), Err(KernelError::Not64Bit));
        hdr[4] = ELFCLASS64;
        hdr[5] = 1; // little-endian
        hdr[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        assert_eq!(inspect(&hdr), Err(KernelError::WrongMachine(183)));
    }

    #[test]
    fn host_binary_is_not_a_k42_kernel() {
        // The test binary itself is an x86_64 ELF, but a PIE without the note.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = inspect(&me).unwrap_err();
        assert!(
            matches!(err, KernelError::NotExecutable(_) | KernelError::NoAbiNote),
            "{err}"
        );
    }
}
