//! User mode: a program runs on every CPU at once, its system calls are
//! checked, and a fault in it ends only the program.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::ktest::TestResult;
use crate::user::{self, Exit};
use crate::{check, kernel_test, smp};

fn program() -> Result<&'static [u8], alloc::string::String> {
    user::module("usertest").ok_or_else(|| "the image has no usertest module".into())
}

fn runs_on_every_cpu() -> TestResult {
    let file = program()?;
    let failures = AtomicU32::new(0);
    smp::run_on_all(|cpu| {
        let exit = user::run(file, [0, cpu as u64, 0, 0, 0, 0, 0, 0]);
        if exit != Ok(Exit::Status(0)) {
            if let Ok(e) = &exit {
                user::describe_exit("usertest", cpu, e);
            }
            failures.fetch_add(1, Ordering::Relaxed);
        }
    });
    let f = failures.load(Ordering::Relaxed);
    check!(f == 0, "usertest failed its system-call checks on {f} CPUs");
    Ok(())
}
kernel_test!("user.every_cpu", runs_on_every_cpu);

fn faults_end_only_the_program() -> TestResult {
    let file = program()?;
    let exit = user::run(file, [1, 0, 0, 0, 0, 0, 0, 0]);
    check!(
        matches!(exit, Ok(Exit::Fault(f)) if f.vector == 14 && f.address == 0xffff_ffff_8020_0000),
        "reading kernel memory from user mode gave {exit:?}, expected a page fault"
    );
    let exit = user::run(file, [2, 0, 0, 0, 0, 0, 0, 0]);
    check!(
        matches!(exit, Ok(Exit::Fault(f)) if f.vector == 6),
        "ud2 in user mode gave {exit:?}, expected #UD"
    );
    let exit = user::run(file, [3, 0, 0, 0, 0, 0, 0, 0]);
    check!(exit == Ok(Exit::Status(42)), "exit(42) gave {exit:?}");
    check!(
        user::run(b"not an elf", [0; 8]).is_err(),
        "a non-ELF program was started"
    );
    Ok(())
}
kernel_test!("user.faults", faults_end_only_the_program);
