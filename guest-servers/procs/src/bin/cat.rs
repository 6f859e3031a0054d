//! `cat PATH...`: print files from the file server (waiting for it to
//! come up first, as init starts it in the background).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use k42_rt::fs::{self, O_READ};
use k42_rt::{Start, print, println, process};

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    if let Err(e) = fs::wait_for_server(100_000) {
        println!("cat: no file server: {e}");
        return 1;
    }
    let mut status = 0;
    for path in process::args(start.info).skip(1) {
        match slurp(path) {
            Ok(bytes) => print!("{}", String::from_utf8_lossy(&bytes)),
            Err(e) => {
                println!("cat: {path}: {e}");
                status = 1;
            }
        }
    }
    status
}

fn slurp(path: &str) -> fs::Result<Vec<u8>> {
    let fd = fs::open(path, O_READ)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = fs::read(fd, &mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    fs::close(fd)?;
    Ok(out)
}
