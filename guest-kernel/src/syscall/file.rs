//! File memory objects and image modules (`proc::files` does the work).

use super::{Context, SysResult, value};
use crate::proc::files;

/// `FileCreate`.
pub fn create(cx: &mut Context, [kind]: [u64; 1]) -> SysResult {
    value(files::create(&*cx.thread()?, kind)?)
}

/// `FileGrant`.
pub fn grant(cx: &mut Context, [h, to, rights]: [u64; 3]) -> SysResult {
    value(files::grant(&*cx.thread()?, h, to, rights)?)
}

/// `FileClose`.
pub fn close(cx: &mut Context, [h]: [u64; 1]) -> SysResult {
    files::close(&*cx.thread()?, h)?;
    value(0)
}

/// `FileRead`.
pub fn read(cx: &mut Context, [h, off, buf, len]: [u64; 4]) -> SysResult {
    value(files::read(&*cx.thread()?, h, off, buf, len)?)
}

/// `FileWrite`.
pub fn write(cx: &mut Context, [h, off, buf, len, flags]: [u64; 5]) -> SysResult {
    value(files::write(&*cx.thread()?, h, off, buf, len, flags)?)
}

/// `FileSize`.
pub fn size(cx: &mut Context, [h]: [u64; 1]) -> SysResult {
    value(files::size(&*cx.thread()?, h)?)
}

/// `FileTruncate`.
pub fn truncate(cx: &mut Context, [h, size]: [u64; 2]) -> SysResult {
    files::truncate(&*cx.thread()?, h, size)?;
    value(0)
}

/// `FileMap`.
pub fn map(cx: &mut Context, [h, len, writable]: [u64; 3]) -> SysResult {
    value(files::map(&*cx.thread()?, h, len, writable)?)
}

/// `ModuleInfo`.
pub fn module_info(cx: &mut Context, [i, buf, cap]: [u64; 3]) -> SysResult {
    value(files::module_info(&*cx.thread()?, i, buf, cap)?)
}

/// `ModuleRead`.
pub fn module_read(cx: &mut Context, [i, off, buf, len]: [u64; 4]) -> SysResult {
    value(files::module_read(&*cx.thread()?, i, off, buf, len)?)
}
