//! The file server's protocol: PPC methods, their messages and replies,
//! and the errors it answers with.
//!
//! The file server (`guest-servers/procs/src/bin/fileserver.rs`) keeps
//! the name space (directories, names, inodes) and registers as
//! [`SERVICE`] with the name server. Opening a file grants the caller a
//! kernel handle to the file's memory object ([`crate::syscall::file`]),
//! through which the caller reads, writes and maps the data itself: data
//! never passes through the server or a PPC message.
//!
//! Messages are paths: absolute, UTF-8, `/`-separated, at most
//! [`MAX_PATH`] bytes, each name at most [`MAX_NAME`] bytes, no `.` or
//! `..` names. Results ≥ 0 are values; < 0 a
//! [`crate::syscall::SyscallError`] or an [`FsError`].

/// The name the file server registers with the name server.
pub const SERVICE: &str = "fs";
/// Longest path in a message.
pub const MAX_PATH: usize = 200;
/// Longest name in a directory.
pub const MAX_NAME: usize = 60;

/// Open `path` (message) with [`open`] flags in `arg`. Result: a file
/// handle for the caller (rights from the flags); reply: [`Stat`].
pub const OPEN: u64 = 1;
/// Reply: the [`Stat`] of `path`; result 0.
pub const STAT: u64 = 2;
/// Make directory `path`.
pub const MKDIR: u64 = 3;
/// List directory `path` from entry number `arg` (names in order).
/// Reply: entries packed as `kind (u8), length (u8), name`; result: the
/// entries in the reply (0: no more).
pub const READDIR: u64 = 4;
/// Remove file `path`; open handles keep its data until closed.
pub const UNLINK: u64 = 5;
/// Remove empty directory `path`.
pub const RMDIR: u64 = 6;
/// Rename: the message is `from` then `to`, `arg` = `from`'s length.
/// Replaces a file at `to`; a directory only into an empty directory's
/// place; never into itself.
pub const RENAME: u64 = 7;
/// Set file `path`'s size to `arg`.
pub const TRUNCATE: u64 = 8;

/// [`OPEN`] flags.
pub mod open {
    /// Grant the read right.
    pub const READ: u64 = 1;
    /// Grant the write right.
    pub const WRITE: u64 = 2;
    /// Create the file if it does not exist.
    pub const CREATE: u64 = 4;
    /// With `CREATE`: fail with `Exists` if it does.
    pub const EXCLUSIVE: u64 = 8;
    /// Cut the file to size 0 (needs `WRITE`).
    pub const TRUNCATE: u64 = 16;
    /// A file this open creates gets the shared page index (one lock),
    /// whatever the server's default.
    pub const SHARED_INDEX: u64 = 32;
    /// A file this open creates gets the distributed page index.
    pub const DISTRIBUTED_INDEX: u64 = 64;
    /// Every flag.
    pub const ALL: u64 = 127;
}

/// A file's kind in [`Stat::kind`] and directory entries.
pub const KIND_FILE: u8 = 1;
/// A directory.
pub const KIND_DIR: u8 = 2;

/// What [`STAT`] and [`OPEN`] reply.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Stat {
    /// Inode number (never reused while the server runs).
    pub ino: u64,
    /// [`KIND_FILE`] or [`KIND_DIR`].
    pub kind: u64,
    /// Bytes in a file; entries in a directory.
    pub size: u64,
}

const _: () = assert!(core::mem::size_of::<Stat>() == 24);

/// Errors of the name space (results below -100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum FsError {
    /// No such file or directory.
    NotFound = -100,
    /// The name exists already.
    Exists = -101,
    /// A path component is not a directory.
    NotADirectory = -102,
    /// A directory where a file is needed.
    IsADirectory = -103,
    /// The directory is not empty.
    NotEmpty = -104,
    /// Not an absolute path of valid names, or too long.
    BadPath = -105,
    /// A directory cannot move into itself, nor the root anywhere.
    Invalid = -106,
}

impl FsError {
    /// The error for a raw result, if it is one.
    pub fn from_raw(raw: i64) -> Option<Self> {
        Some(match raw {
            -100 => Self::NotFound,
            -101 => Self::Exists,
            -102 => Self::NotADirectory,
            -103 => Self::IsADirectory,
            -104 => Self::NotEmpty,
            -105 => Self::BadPath,
            -106 => Self::Invalid,
            _ => return None,
        })
    }

    /// What the error means, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotFound => "no such file or directory",
            Self::Exists => "file exists",
            Self::NotADirectory => "not a directory",
            Self::IsADirectory => "is a directory",
            Self::NotEmpty => "directory not empty",
            Self::BadPath => "bad path",
            Self::Invalid => "invalid rename",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip() {
        for raw in -106..=-100 {
            let e = FsError::from_raw(raw).unwrap();
            assert_eq!(e as i64, raw);
            assert!(!e.describe().is_empty());
        }
        assert_eq!(FsError::from_raw(-99), None);
        assert_eq!(FsError::from_raw(-107), None);
    }
}
