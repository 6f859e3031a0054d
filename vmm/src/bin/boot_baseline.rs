//! `k42vmm-boot-baseline --vcpus N [--memory SIZE]`: the floor for boot
//! time. Creates the same VM as `k42vmm run` (RAM, irqchip, boot page
//! tables, per-vCPU threads each creating and configuring its vCPU with
//! the same CPUID, MSRs and 64-bit state) but runs a two-instruction guest
//! on every vCPU — one port write — and exits when all have written.
//! `make bench-boot` compares k42vmm's boot against it.

use std::process::ExitCode;

use k42_abi::layout::{BOOT_STACK_SIZE, KERNEL_PHYS_BASE, KERNEL_VIRT_BASE};
use k42vmm::config::{DEFAULT_MEMORY, parse_size};
use k42vmm::kvm::{self, KvmVm};
use k42vmm::loader;
use k42vmm::memory::GuestRam;
use kvm_ioctls::VcpuExit;

/// `mov dx, 0x80; out dx, al; hlt`
const GUEST: [u8; 6] = [0x66, 0xba, 0x80, 0x00, 0xee, 0xf4];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut vcpus = 1u32;
    let mut memory = DEFAULT_MEMORY;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next();
        match (a.as_str(), v) {
            ("--vcpus", Some(v)) => match v.parse() {
                Ok(n) if (1..=k42_abi::MAX_VCPUS as u32).contains(&n) => vcpus = n,
                _ => return usage(&format!("--vcpus {v}: give 1 to {}", k42_abi::MAX_VCPUS)),
            },
            ("--memory", Some(v)) => match parse_size(v) {
                Ok(m) => memory = m,
                Err(e) => return usage(&e),
            },
            _ => return usage(&format!("unexpected argument '{a}'")),
        }
    }
    match run(vcpus, memory) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k42vmm-boot-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("k42vmm-boot-baseline: {msg}\nusage: k42vmm-boot-baseline --vcpus N [--memory SIZE]");
    ExitCode::from(2)
}

fn run(vcpus: u32, memory: u64) -> Result<(), String> {
    let ram = GuestRam::new(memory).map_err(|e| e.to_string())?;
    let vm =
        KvmVm::create(kvm::open().map_err(|e| e.to_string())?, &ram).map_err(|e| e.to_string())?;
    let mut layout = loader::write_boot_tables(&ram).map_err(|e| e.to_string())?;
    ram.write(KERNEL_PHYS_BASE, &GUEST)
        .map_err(|_| "cannot write the guest code".to_string())?;
    layout.entry = KERNEL_VIRT_BASE + KERNEL_PHYS_BASE;
    layout.stacks_base = KERNEL_PHYS_BASE + 0x10_0000;
    if layout.stacks_base + vcpus as u64 * BOOT_STACK_SIZE > ram.low_size() {
        return Err("--memory is too small for the boot stacks".into());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..vcpus)
            .map(|i| {
                let (vm, layout) = (&vm, &layout);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || -> Result<(), String> {
                        let mut vcpu = vm
                            .fd
                            .create_vcpu(i as u64)
                            .map_err(|e| format!("vCPU {i}: {e}"))?;
                        k42vmm::vcpu::configure(&vcpu, &vm.supported_cpuid, layout, i, vcpus)?;
                        loop {
                            match vcpu.run() {
                                Ok(VcpuExit::IoOut(0x80, _)) => return Ok(()),
                                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                                }
                                other => {
                                    return Err(format!("vCPU {i}: unexpected exit {other:?}"));
                                }
                            }
                        }
                    })
                    .expect("thread starts")
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err("vCPU thread panicked".into()))
        })
    })
}
