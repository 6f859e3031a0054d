//! The ABI note: how a kernel ELF says which ABI version it was built for.
//!
//! The kernel places one [`KernelAbiNote`] in an ELF section named
//! [`SECTION`]. The VMM reads it before loading anything and refuses a
//! kernel without it or with a different [`crate::ABI_VERSION`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Name of the ELF section that holds the note.
pub const SECTION: &str = ".k42_abi";

/// Magic bytes at the start of the note.
pub const MAGIC: [u8; 8] = *b"K42ABI\0\0";

/// Contents of the [`SECTION`] section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KernelAbiNote {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// The [`crate::ABI_VERSION`] the kernel was built against.
    pub abi_version: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<KernelAbiNote>() == 16);

impl KernelAbiNote {
    /// The note for a kernel built against this crate.
    pub const CURRENT: Self = Self {
        magic: MAGIC,
        abi_version: crate::ABI_VERSION,
        reserved: 0,
    };
}
