//! The in-kernel test registry and runner.
//!
//! A test is registered where it is defined with [`kernel_test!`], which
//! places a [`KernelTest`] record in the `.k42_tests` linker section; the
//! runner finds them all between the section's start and end symbols.
//! The command line selects them (`test=all`, `test=none`,
//! `test=NAME[,NAME…]`). Each result is printed and reported to k42vmm by
//! hypercall (so `--report` lists it); the kernel shuts down with 0 only
//! if every selected test passed.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use k42_abi::Hypercall;
use k42_abi::trace::ev;

use crate::arch;
use crate::boot::TestSelection;
use crate::time;

/// A failed test's message.
pub type Failure = String;
/// What a test returns.
pub type TestResult = Result<(), Failure>;

/// One registered test.
#[repr(C)]
pub struct KernelTest {
    pub name: &'static str,
    pub func: fn() -> TestResult,
}

/// Register `$func` as the kernel test `$name`.
#[macro_export]
macro_rules! kernel_test {
    ($name:literal, $func:path) => {
        const _: () = {
            #[used]
            #[unsafe(link_section = ".k42_tests")]
            static TEST: $crate::ktest::KernelTest = $crate::ktest::KernelTest {
                name: $name,
                func: $func,
            };
        };
    };
}

/// Fail the current test with a formatted message unless `$cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($fmt)+));
        }
    };
}

unsafe extern "C" {
    static __k42_tests_start: [u8; 0];
    static __k42_tests_end: [u8; 0];
}

/// Every registered test, in link order (sorting would cost milliseconds
/// of emulated string comparisons at every boot).
pub fn all_tests() -> &'static [KernelTest] {
    // SAFETY: the linker script places only KernelTest records (from
    // kernel_test!) between these symbols.
    unsafe {
        let start = (&raw const __k42_tests_start) as *const KernelTest;
        let end = (&raw const __k42_tests_end) as *const KernelTest;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// The tests a selection names, or a message naming an unknown one.
pub fn select(sel: TestSelection) -> Result<Vec<&'static KernelTest>, String> {
    let all = all_tests();
    match sel {
        TestSelection::All => Ok(all.iter().collect()),
        TestSelection::None => Ok(Vec::new()),
        TestSelection::Named(names) => {
            let mut picked = Vec::new();
            for name in names.split(',').filter(|n| !n.is_empty()) {
                match all.iter().find(|t| t.name == name) {
                    Some(t) => picked.push(t),
                    None => {
                        let mut m = String::new();
                        let _ = write!(m, "unknown kernel test '{name}'; known tests:");
                        for t in all {
                            let _ = write!(m, " {}", t.name);
                        }
                        return Err(m);
                    }
                }
            }
            Ok(picked)
        }
    }
}

/// Run `tests` on this CPU in order; returns how many failed.
pub fn run(tests: &[&'static KernelTest]) -> usize {
    let mut failed = 0;
    crate::trace::log(ev::boot::tests_begin(tests.len() as u64));
    for (i, t) in tests.iter().enumerate() {
        crate::trace::log(ev::test::begin(i as u64));
        let t0 = time::now_ns();
        let result = (t.func)();
        let ns = time::now_ns().saturating_sub(t0);
        crate::trace::log(ev::test::end(i as u64, result.is_ok() as u64));
        let ms = ns / 1_000_000;
        let frac = (ns / 1000) % 1000;
        match &result {
            Ok(()) => crate::println!("test {} ... ok ({}.{:03} ms)", t.name, ms, frac),
            Err(m) => {
                failed += 1;
                crate::println!("test {} ... FAILED: {}", t.name, m);
            }
        }
        let pa =
            arch::virt_to_phys(t.name.as_ptr() as u64).expect("test names are in the kernel image");
        arch::hypercall(Hypercall::test_result(
            pa,
            t.name.len() as u64,
            result.is_ok(),
            ns,
        ));
    }
    crate::trace::log(ev::boot::tests_end(failed as u64));
    failed
}
