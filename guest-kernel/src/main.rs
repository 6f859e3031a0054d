//! The k42 kernel: a K42-style scalable microkernel, booted by k42vmm.
//!
//! Boot, on every vCPU at once once vCPU 0 lets them go:
//!
//! ```text
//! vCPU 0 (boot CPU)                        vCPU 1..N-1 (APs)
//! GDT/TSS, GS → per-CPU data               (waiting in k42vmm)
//! boot info (hypercall), command line
//! topology (hypercall): each CPU's node
//! IDT, x2APIC, time base, frames, heap
//! StartAps hypercall ─────────────────────► GDT/TSS, GS, IDT, x2APIC
//! online; halt until all are online ◄───── online (last one sends IPI)
//! run the selected in-kernel tests         idle loop: serve cross-CPU
//! shutdown(0 if all passed, else 1)          calls, halt otherwise
//! ```
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod bench;
mod boot;
mod cobj;
mod console;
mod ktest;
mod ktests;
mod mm;
mod percpu;
mod probe;
mod proc;
mod smp;
mod sync;
mod syscall;
mod syscall_path;
mod time;
mod topology;
mod trace;
mod user;
mod usertrap;

use core::fmt::Write;
use core::sync::atomic::Ordering;

use k42_abi::trace::ev;
use k42_abi::{Hypercall, KernelAbiNote};

use crate::arch::x86_64::{apic, gdt, interrupts, linux_syscall};
use crate::boot::Crash;

/// The ABI note k42vmm checks before loading this kernel.
#[used]
#[unsafe(link_section = ".k42_abi")]
static ABI_NOTE: KernelAbiNote = KernelAbiNote::CURRENT;

/// Entry from `_start` on every vCPU.
pub fn start(cpu: u32, magic: u64) -> ! {
    let trap_stack = gdt::init_cpu(cpu as usize);
    percpu::init(cpu);
    linux_syscall::set_trap_stack(trap_stack);
    linux_syscall::init_cpu();
    if cpu == 0 {
        boot_cpu_main(magic)
    } else {
        interrupts::load();
        apic::init_cpu(interrupts::VECTOR_SPURIOUS, interrupts::VECTOR_TIMER);
        arch::enable_interrupts();
        smp::mark_online();
        smp::idle_loop()
    }
}

fn boot_cpu_main(magic: u64) -> ! {
    if magic != k42_abi::boot::BOOT_MAGIC {
        panic!("entered with boot magic {magic:#x}: not started by a compatible k42vmm");
    }
    console::write_str("k42: kernel entered\n");
    let bi = boot::fetch_boot_info();
    let cmdline = bi
        .cmdline()
        .unwrap_or_else(|| panic!("the kernel command line is not UTF-8"));
    let opts = match boot::parse_options(cmdline) {
        Ok(o) => o,
        Err(bad) => shutdown_with_error(format_args!("{bad}")),
    };
    console::use_hypercall(!opts.serial_console);
    let topo = topology::fetch(bi.vcpus);
    check_cpu_features();
    interrupts::init();
    usertrap::init();
    apic::init_cpu(interrupts::VECTOR_SPURIOUS, interrupts::VECTOR_TIMER);
    time::init(bi.tsc_khz, bi.realtime_ns);
    proc::tty::init(
        bi.console_input == 1,
        bi.console_is_terminal == 1,
        (bi.console_rows, bi.console_cols),
    );
    bench::calibrate();
    smp::init(bi.vcpus);
    let geometry = opts.trace.geometry;
    let trace_bytes = trace::region_size(geometry, bi.vcpus);
    match mm::init(trace_bytes) {
        Some(pa) => {
            if let Err(trace::Refused(r)) = trace::init(pa, geometry, bi.vcpus) {
                println!("k42: k42vmm refused the trace region ({r}); tracing is off");
            }
        }
        None => println!(
            "k42: no room for {} KiB of trace buffers; tracing is off",
            trace_bytes >> 10
        ),
    }
    trace::log(ev::boot::tracing_on(
        bi.vcpus as u64,
        geometry.subbuf_size(),
        geometry.nsubbufs as u64,
    ));
    let tests = match ktest::select(opts.tests) {
        Ok(t) => t,
        Err(msg) => shutdown_with_error(format_args!("{msg}")),
    };

    arch::enable_interrupts();
    smp::start_aps();
    // Formatting is slow when emulated: print while the APs come up.
    // Short: each formatted number costs hundreds of emulated instructions.
    println!(
        "k42: {} vCPUs, {} MiB RAM, {} NUMA node(s), TSC {} MHz",
        bi.vcpus,
        bi.mem_size >> 20,
        topo.nodes,
        bi.tsc_khz / 1000
    );
    smp::mark_online();
    smp::wait_until(|| smp::online() == smp::ncpus());
    trace::log(ev::boot::all_online(smp::ncpus() as u64));
    println!("k42: all {} CPUs online", smp::ncpus());

    if let Some(crash) = opts.crash {
        provoke(crash);
    }
    let mut failed = ktest::run(&tests);
    if let Some(register) = opts.probe_pvm {
        probe::pvm(register);
    }
    if opts.bench_trace {
        println!("k42: tracing benchmark");
        if let Err(e) = bench::trace() {
            println!("k42: tracing benchmark failed: {e}");
            failed += 1;
        }
    }
    if opts.bench_cobj {
        println!("k42: clustered-object benchmarks");
        if let Err(e) = bench::cobj(opts.cobj_ops) {
            println!("k42: clustered-object benchmarks failed: {e}");
            failed += 1;
        }
    }
    if opts.bench_platform {
        println!("k42: platform benchmark");
        if let Err(e) = bench::platform(&bench::PLATFORM_SIZES) {
            println!("k42: platform benchmark failed: {e}");
            failed += 1;
        }
    }
    if failed == 0 {
        println!("k42: {} tests passed", tests.len());
    } else {
        println!(
            "k42: {failed} of {} tests or benchmarks FAILED",
            tests.len()
        );
    }
    // Processes run only on a kernel whose tests passed; the VM's exit
    // code is then init's.
    match opts.init {
        Some(init) if failed == 0 => shutdown(run_init(init).unwrap_or(1)),
        _ => shutdown(u8::from(failed > 0)),
    }
}

/// Run `program` as process 1, its arguments the lines of `init.run=` or
/// else of the image's `init.rc` module (comments and blank lines
/// dropped); returns the exit
/// code for the VM: init's exit status, or 1 if it was killed (`None`
/// when it could not start).
fn run_init(program: &str) -> Option<u8> {
    let mut args = alloc::vec::Vec::from(program.as_bytes());
    args.push(0);
    if let Some(lines) = boot::options().init_run {
        for line in lines.split(',').filter(|l| !l.is_empty()) {
            args.extend(line.bytes().map(|b| if b == b'+' { b' ' } else { b }));
            args.push(0);
        }
    } else if let Some(rc) = user::module("init.rc") {
        let Ok(rc) = core::str::from_utf8(rc) else {
            println!("k42: init.rc is not UTF-8");
            return None;
        };
        for line in rc.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                args.extend_from_slice(line.as_bytes());
                args.push(0);
            }
        }
    }
    args.push(0);
    println!("k42: starting init ({program})");
    match proc::run_init(program, &args) {
        Ok(word) => {
            proc::linux::report_unimplemented();
            println!("k42: init {}", proc::describe_status(word));
            Some(if word <= 255 { word as u8 } else { 1 })
        }
        Err(e) => {
            println!("k42: init ({program}) could not start: {}", e.describe());
            None
        }
    }
}

/// The CPU features this kernel cannot run without, with a clear panic
/// when the VMM did not provide them.
fn check_cpu_features() {
    const ECX_X2APIC: u32 = 1 << 21;
    const ECX_TSC_DEADLINE: u32 = 1 << 24;
    let leaf1 = arch::cpuid(1, 0);
    if leaf1.ecx & ECX_X2APIC == 0 {
        panic!("the CPU has no x2APIC (CPUID.1:ECX[21]); k42 needs it for IPIs");
    }
    if leaf1.ecx & ECX_TSC_DEADLINE == 0 {
        panic!("the CPU has no TSC-deadline timer (CPUID.1:ECX[24]); k42 needs it for timers");
    }
}

/// Fail on purpose, as the command line asked.
fn provoke(crash: Crash) {
    println!("k42: crash={crash:?} requested");
    match crash {
        Crash::Panic => panic!("crash=panic requested on the command line"),
        Crash::PageFault => {
            // SAFETY: deliberately reads an unmapped address (the null
            // page is never mapped) to test the page-fault report.
            let v = unsafe { core::ptr::read_volatile(0x10 as *const u64) };
            println!("k42: read {v:#x} from an unmapped address?");
        }
        Crash::TripleFault => {
            interrupts::load_empty_idt();
            // SAFETY: ud2 raises #UD; with no IDT that becomes a triple
            // fault, which is the point.
            unsafe { core::arch::asm!("ud2") };
        }
        Crash::Hang => loop {
            arch::disable_interrupts();
            arch::enable_and_halt();
        },
    }
}

/// Stop the VM with exit code `code`.
pub fn shutdown(code: u8) -> ! {
    syscall_path::report_at_exit();
    trace::log(ev::boot::shutdown(code as u64));
    arch::hypercall(Hypercall::shutdown(code));
    arch::halt_forever()
}

/// Print a one-line error and stop the VM with exit code 2 (bad input).
fn shutdown_with_error(msg: core::fmt::Arguments) -> ! {
    console::use_hypercall(true);
    println!("k42: {msg}");
    shutdown(2)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    arch::disable_interrupts();
    let me = percpu::current();
    if me.panicking.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: stop without formatting.
        let msg = "panic while panicking";
        arch::hypercall(Hypercall::panic(
            arch::virt_to_phys(msg.as_ptr() as u64).unwrap_or(0),
            msg.len() as u64,
        ));
        arch::halt_forever();
    }
    let mut buf = console::FixedBuf::<1024>::new();
    let _ = write!(buf, "CPU {}: {}", me.id(), info.message());
    if let Some(loc) = info.location() {
        let _ = write!(buf, " at {}:{}", loc.file(), loc.line());
    }
    let msg = buf.as_str();
    let pa = arch::virt_to_phys(msg.as_ptr() as u64).unwrap_or(0);
    arch::hypercall(Hypercall::panic(pa, msg.len() as u64));
    arch::halt_forever()
}
