//! `init`: process 1. Each argument after its name is one line of the
//! image's `init.rc`: a program and its arguments. init runs them one
//! after another, reports how each ended, and exits 0 if all exited 0,
//! else 1 — which becomes the VM's exit code. A line ending in `&` starts
//! its program in the background (a server such as `nameserver`): init
//! does not wait for it, and it ends with init.
#![no_std]
#![no_main]

use k42_rt::process::{self, ArgBlock, Ended, Regions};
use k42_rt::{Start, println};

k42_rt::main!(run);

fn run(start: Start) -> u8 {
    let (mut ran, mut failed) = (0, 0);
    for line in process::args(start.info).skip(1) {
        let (line, background) = match line.trim_end().strip_suffix('&') {
            Some(l) => (l.trim_end(), true),
            None => (line, false),
        };
        let mut words = line.split_ascii_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut args = ArgBlock::new();
        args.arg(program);
        for w in words {
            args.arg(w);
        }
        if background {
            match process::spawn(program, &mut args, Regions::Shared) {
                Ok(pid) => println!("init: {line}: started in the background (process {pid})"),
                Err(e) => {
                    println!("init: {line}: cannot start: {}", e.describe());
                    failed += 1;
                }
            }
            continue;
        }
        ran += 1;
        let pid = match process::spawn(program, &mut args, Regions::Shared) {
            Ok(pid) => pid,
            Err(e) => {
                println!("init: {line}: cannot start: {}", e.describe());
                failed += 1;
                continue;
            }
        };
        match process::wait(Some(pid)) {
            Ok((_, Ended::Exited(0))) => println!("init: {line}: exited with status 0"),
            Ok((_, how)) => {
                failed += 1;
                match how {
                    Ended::Exited(s) => println!("init: {line}: exited with status {s}"),
                    Ended::Fault(v) => println!("init: {line}: killed by exception {v}"),
                    Ended::Killed => println!("init: {line}: killed"),
                    Ended::OutOfMemory => println!("init: {line}: killed: out of memory"),
                    Ended::Signaled(s) => println!("init: {line}: killed by signal {s}"),
                }
            }
            Err(e) => {
                failed += 1;
                println!("init: {line}: wait failed: {}", e.describe());
            }
        }
    }
    println!("init: {ran} program(s) run, {failed} failed");
    u8::from(failed > 0)
}
