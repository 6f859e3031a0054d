//! Fixed workloads for platform measurements.
//!
//! The same function, compiled once for the host and once for the guest,
//! executes the same instructions wherever it runs, so its time per
//! iteration compares the host CPU, guest user mode and guest supervisor
//! mode directly. The loop body is written in assembly so that no
//! compiler can unroll, vectorise or delete it differently per target.
#![no_std]

use core::arch::asm;

/// Run a dependent chain of integer operations `iterations` times (add,
/// rotate, decrement, branch) and return the accumulator, so the work
/// cannot be skipped.
#[inline(never)]
pub fn spin(iterations: u64) -> u64 {
    let mut acc: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = iterations;
    if n == 0 {
        return acc;
    }
    // SAFETY: register-only arithmetic and a backward branch; no memory,
    // no stack.
    unsafe {
        asm!(
            "2:",
            "add {acc}, {n}",
            "rol {acc}, 7",
            "dec {n}",
            "jnz 2b",
            acc = inout(reg) acc,
            n = inout(reg) n,
            options(nomem, nostack),
        );
    }
    let _ = n;
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_depends_on_its_input() {
        assert_ne!(spin(1), spin(2));
        assert_eq!(spin(1000), spin(1000));
        assert_eq!(spin(0), 0x9e37_79b9_7f4a_7c15);
    }
}
