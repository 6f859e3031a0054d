//! COM1 output for the early console (before boot info arrives, and for
//! `console=serial`). Each byte is one VM exit: fine for a boot banner,
//! too slow for bulk output.

use ::x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// Write `s` to COM1.
pub fn write_str(s: &[u8]) {
    let mut data: Port<u8> = Port::new(COM1);
    for &b in s {
        // SAFETY: COM1's data register; writing it only transmits a byte.
        unsafe { data.write(b) };
    }
}
