//! Protected procedure calls: serve, call, return, look up a server
//! (`proc::ppc` does the work).

use super::{Context, Done, SysResult, value};
use crate::proc;

/// `PpcServe`: become a PPC server; parks the calling thread for good.
pub fn serve(cx: &mut Context, args: [u64; 5]) -> SysResult {
    let t = cx.thread()?;
    proc::ppc::serve(&t, args, cx.frame)?;
    Ok(Done::Switched)
}

/// `PpcCall`: call the server behind a handle on this CPU.
pub fn call(cx: &mut Context, args: [u64; 5]) -> SysResult {
    let t = cx.thread()?;
    proc::ppc::call(&t, args, cx.frame)?;
    Ok(Done::Switched)
}

/// `PpcReturn`: end the call this thread serves.
pub fn ret(cx: &mut Context, [result, reply_len]: [u64; 2]) -> SysResult {
    let t = cx.thread()?;
    proc::ppc::ret(&t, result, reply_len, cx.frame)?;
    Ok(Done::Switched)
}

/// `PpcLookup`: the handle of a process's server (0: the name server).
pub fn lookup(cx: &mut Context, [pid]: [u64; 1]) -> SysResult {
    cx.thread()?;
    value(proc::ppc::lookup(pid)?)
}
