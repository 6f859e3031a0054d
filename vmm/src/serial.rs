//! COM1 (I/O ports 0x3f8–0x3ff): a 16550 UART from vm-superio whose
//! transmit side writes to k42vmm's stdout and whose receive FIFO is fed
//! from stdin by the main loop; its interrupt is IRQ 4 through an irqfd.
//!
//! The kernel uses it before its hypercall console works, and for
//! `console=serial`. Each byte costs one VM exit, so it is not for bulk
//! output.

use std::io::{self, Write};

use kvm_ioctls::VmFd;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// First I/O port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of COM1 registers.
pub const COM1_PORTS: u16 = 8;
/// COM1's legacy interrupt line.
pub const COM1_IRQ: u32 = 4;

/// Raises COM1's interrupt line through an irqfd.
pub struct IrqLine(EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where transmitted bytes go.
pub type SerialOut = Box<dyn Write + Send>;

/// The COM1 UART.
pub struct Com1 {
    uart: Serial<IrqLine, vm_superio::serial::NoEvents, SerialOut>,
}

impl Com1 {
    /// COM1 wired to IRQ 4 of `vm`, transmitting to `out`.
    pub fn new(vm: &VmFd, out: SerialOut) -> io::Result<Self> {
        let irq = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd(&irq, COM1_IRQ)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self {
            uart: Serial::new(IrqLine(irq), out),
        })
    }

    /// Whether `port` belongs to COM1.
    pub fn owns(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + COM1_PORTS).contains(&port)
    }

    /// A guest `out` to a COM1 register.
    pub fn write(&mut self, port: u16, value: u8) {
        // An error here is a failed irqfd write or stdout write; the guest
        // cannot be told, and the byte is dropped.
        let _ = self.uart.write((port - COM1_BASE) as u8, value);
    }

    /// A guest `in` from a COM1 register.
    pub fn read(&mut self, port: u16) -> u8 {
        self.uart.read((port - COM1_BASE) as u8)
    }

    /// Queue console input for the guest; returns how many bytes fit.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Flush transmitted bytes.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}
