//! `hello`: the smallest process: greets with its pid, CPU, arguments
//! and environment, and exits 0.
#![no_std]
#![no_main]

use k42_rt::process;
use k42_rt::{Start, get_cpu, print, println};

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    print!(
        "hello, world from process {} on CPU {}; args:",
        process::getpid(),
        get_cpu()
    );
    for a in process::args(start.info) {
        print!(" {a}");
    }
    let mut env = process::env(start.info).peekable();
    if env.peek().is_some() {
        print!("; env:");
        for e in env {
            print!(" {e}");
        }
    }
    println!();
    0
}
