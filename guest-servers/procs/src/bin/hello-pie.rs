//! `hello-pie`: `hello` as a position-independent executable. The
//! kernel loads it at `PIE_BASE` and applies its relocations as its pages
//! are first touched; the pointers in these statics only work if it did.
#![no_std]
#![no_main]

use k42_rt::process;
use k42_rt::{Start, println};

k42_rt::main!(run);

/// Absolute addresses in initialised data: each needs a relocation.
static WORDS: [&str; 3] = ["hello,", "position-independent", "world"];
static STEPS: [fn(u64) -> u64; 2] = [double, add_one];

fn double(x: u64) -> u64 {
    x * 2
}

fn add_one(x: u64) -> u64 {
    x + 1
}

fn run(start: Start) -> u8 {
    let v = STEPS.iter().fold(20, |acc, f| f(acc));
    let here = run as *const () as u64;
    println!(
        "{} {} {} from process {} (code at {here:#x}, 20*2+1 = {v})",
        WORDS[0],
        WORDS[1],
        WORDS[2],
        process::getpid()
    );
    let _ = start;
    u8::from(v != 41)
}
