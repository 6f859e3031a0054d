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
//! `..` names. Symbolic links are followed in every name of a path but
//! the last; the last too by [`OPEN`], [`STAT`] (unless [`STAT_NOFOLLOW`]),
//! [`CHMOD`], [`SET_TIME`] and [`TRUNCATE`]; never by the calls that act on
//! a name itself ([`UNLINK`], [`RENAME`], [`SYMLINK`], [`READLINK`],
//! [`LINK`]'s new name, [`MKDIR`], [`RMDIR`]). A link's target may hold
//! `.` and `..`. Results ≥ 0 are values; < 0 a
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
/// Reply: the [`Stat`] of `path` (of a link itself with
/// [`STAT_NOFOLLOW`] in `arg`); result 0.
pub const STAT: u64 = 2;
/// Make directory `path`; `arg`: [`MODE_GIVEN`] | permission bits, or 0
/// for 0o755.
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
/// Make symbolic link: the message is the target then the link's path,
/// `arg` = the target's length.
pub const SYMLINK: u64 = 9;
/// Reply: the target of link `path`; result: its length.
pub const READLINK: u64 = 10;
/// Hard link: the message is an existing file's path then the new name,
/// `arg` = the first path's length (files only).
pub const LINK: u64 = 11;
/// Set `path`'s permission bits to `arg` (0o7777 at most).
pub const CHMOD: u64 = 12;
/// Set `path`'s modification time to `arg` (wall clock, ns since 1970).
pub const SET_TIME: u64 = 13;

/// [`STAT`]'s `arg`: do not follow a link in the last name.
pub const STAT_NOFOLLOW: u64 = 1;
/// In [`MKDIR`]'s `arg` and [`open`] flags: the permission bits are given
/// (bits 0..12 of `arg`, or [`open::MODE_SHIFT`] up in open flags).
pub const MODE_GIVEN: u64 = 1 << 15;
/// Permission bits a file made without a mode gets.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Permission bits a directory made without a mode gets, and a program
/// from the image.
pub const DEFAULT_EXEC_MODE: u32 = 0o755;
/// Longest symbolic-link target.
pub const MAX_TARGET: usize = MAX_PATH;
/// Most links one lookup follows (Linux's limit).
pub const MAX_LINKS_FOLLOWED: u32 = 40;

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
    /// Where a created file's permission bits go in the flags, with
    /// [`super::MODE_GIVEN`] set in the flags too (0o644 otherwise).
    pub const MODE_SHIFT: u32 = 16;
}

/// A file's kind in [`Stat::kind`] and directory entries.
pub const KIND_FILE: u8 = 1;
/// A directory.
pub const KIND_DIR: u8 = 2;
/// A symbolic link.
pub const KIND_SYMLINK: u8 = 3;

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
    /// [`KIND_FILE`], [`KIND_DIR`] or [`KIND_SYMLINK`].
    pub kind: u64,
    /// Bytes in a file or a link's target; entries in a directory.
    pub size: u64,
    /// Permission bits (0o7777 at most).
    pub mode: u32,
    /// Names of a file; 2 + subdirectories for a directory; 1 for a link.
    pub nlink: u32,
    /// Modification time (wall clock, ns since 1970): when made, or as
    /// [`SET_TIME`] set it (writes through a handle do not change it).
    pub mtime: u64,
}

const _: () = assert!(core::mem::size_of::<Stat>() == 40);

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
    /// Too many symbolic links in a lookup.
    Loop = -107,
    /// Not a symbolic link.
    NotALink = -108,
    /// Not allowed on a directory (a hard link to one).
    NotPermitted = -109,
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
            -107 => Self::Loop,
            -108 => Self::NotALink,
            -109 => Self::NotPermitted,
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
            Self::Loop => "too many levels of symbolic links",
            Self::NotALink => "not a symbolic link",
            Self::NotPermitted => "operation not permitted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip() {
        for raw in -109..=-100 {
            let e = FsError::from_raw(raw).unwrap();
            assert_eq!(e as i64, raw);
            assert!(!e.describe().is_empty());
        }
        assert_eq!(FsError::from_raw(-99), None);
        assert_eq!(FsError::from_raw(-110), None);
    }
}
