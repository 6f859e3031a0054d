//! File memory objects and image modules (`proc::files` does the work).

use k42_abi::syscall::file::PIPE_NONBLOCK;
use zerocopy::IntoBytes;

use super::{Context, Done, SysResult, value};
use crate::mm::user;
use crate::proc::{files, pipe};

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

/// What a pipe call did, as a handler's result.
fn pipe_result(r: pipe::Outcome) -> SysResult {
    match r {
        pipe::Outcome::Done(n) => value(n),
        pipe::Outcome::Blocked => Ok(Done::Switched),
    }
}

/// `FileRead` (a file, or a pipe's read end).
pub fn read(cx: &mut Context, [h, off, buf, len]: [u64; 4]) -> SysResult {
    let t = cx.thread()?;
    if let Some(end) = files::pipe_end(&t.process, h) {
        let nonblock = off & PIPE_NONBLOCK != 0;
        return pipe_result(pipe::read(&t, &end, buf, len, nonblock, cx.frame)?);
    }
    value(files::read(&t, h, off, buf, len)?)
}

/// `FileWrite` (a file, or a pipe's write end).
pub fn write(cx: &mut Context, [h, off, buf, len, flags]: [u64; 5]) -> SysResult {
    let t = cx.thread()?;
    if let Some(end) = files::pipe_end(&t.process, h) {
        let nonblock = off & PIPE_NONBLOCK != 0;
        return pipe_result(pipe::write(&t, &end, buf, len, nonblock, cx.frame)?);
    }
    value(files::write(&t, h, off, buf, len, flags)?)
}

/// `PipeCreate`: the two handles to the caller's `out`.
pub fn pipe(cx: &mut Context, [out]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    // The words first: a bad pointer makes no pipe.
    user::copy_out(t.memory(), out, &[0u8; 16])?;
    let (r, w) = files::pipe(&t)?;
    let mut words = [0u8; 16];
    words[..8].copy_from_slice(&r.to_le_bytes());
    words[8..].copy_from_slice(&w.to_le_bytes());
    user::copy_out(t.memory(), out, &words)?;
    value(0)
}

/// `FileSize`.
pub fn size(cx: &mut Context, [h]: [u64; 1]) -> SysResult {
    value(files::size(&*cx.thread()?, h)?)
}

/// `FileStat`.
pub fn stat(cx: &mut Context, [h, out]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    let state = files::stat(&t, h)?;
    user::copy_out(t.memory(), out, state.as_bytes())?;
    value(0)
}

/// `FileSetTime`.
pub fn set_time(cx: &mut Context, [h, ns]: [u64; 2]) -> SysResult {
    files::set_time(&*cx.thread()?, h, ns)?;
    value(0)
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

/// `PipePoll`.
pub fn pipe_poll(cx: &mut Context, [h]: [u64; 1]) -> SysResult {
    let t = cx.thread()?;
    let end = files::pipe_end(&t.process, h).ok_or(k42_abi::syscall::SyscallError::BadHandle)?;
    value(pipe::poll(&end))
}

/// `FileSeek`.
pub fn seek(cx: &mut Context, [h, off, whence]: [u64; 3]) -> SysResult {
    value(files::seek(&*cx.thread()?, h, off as i64, whence)?)
}
