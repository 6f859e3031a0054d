//! One thread per vCPU: pin the thread to its host CPU (as the placement
//! plan says; the affinity is read back and checked), create the vCPU in
//! that thread, configure it for a direct 64-bit entry, wait for its start
//! signal, and run it until the VM stops, handling its exits.
//!
//! Kicking: a vCPU thread keeps a pointer to its `kvm_run` page in a
//! thread-local; the kick signal's handler sets `immediate_exit` there, so
//! a kick that lands just before `KVM_RUN` still makes it return at once.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use kvm_bindings::{
    CpuId, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, Msrs, kvm_fpu, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_run, kvm_segment,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use libc::{c_int, c_void, siginfo_t};

use crate::exit::ExitReason;
use crate::hypercall::{self, Outcome};
use crate::loader::BootLayout;
use crate::run_state::VmShared;
use crate::serial::Com1;
use crate::topology::pin;

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Handler for [`kick_signal`].
pub extern "C" fn kick_handler(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is set only while this thread owns a live
            // VcpuFd whose kvm_run mapping it points into, and cleared before
            // that VcpuFd is dropped; a byte store is async-signal-safe.
            unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
        }
    });
}

/// What one vCPU did, for the report.
#[derive(Clone, Debug, Default)]
pub struct VcpuStats {
    pub index: u32,
    /// Exits to k42vmm by reason.
    pub exits: BTreeMap<&'static str, u64>,
    /// Whether this vCPU ever entered the guest.
    pub ran: bool,
    /// State at the end of a timed-out run ("halted", or "running at rip …").
    pub final_state: Option<String>,
    /// The thread's CPU affinity, read back after pinning.
    pub affinity: Option<Vec<u32>>,
}

impl VcpuStats {
    fn count(&mut self, reason: &'static str) {
        *self.exits.entry(reason).or_default() += 1;
    }
}

/// Body of vCPU `index`'s thread.
pub fn vcpu_thread(shared: &VmShared, index: u32) -> VcpuStats {
    let mut stats = VcpuStats {
        index,
        ..Default::default()
    };
    shared.register_thread(index);
    match pin_thread(shared, index) {
        Ok(affinity) => stats.affinity = affinity,
        Err(e) => {
            shared.exit.decide(ExitReason::HostError(e));
            return stats;
        }
    }
    let mut vcpu = match create(shared, index) {
        Ok(v) => v,
        Err(e) => {
            shared
                .exit
                .decide(ExitReason::HostError(format!("vCPU {index}: {e}")));
            return stats;
        }
    };
    if index != 0 && !shared.ap_gate.wait() {
        return stats;
    }
    KVM_RUN.with(|p| p.set(vcpu.get_kvm_run() as *mut kvm_run));
    run_loop(shared, &mut vcpu, index, &mut stats);
    KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    if matches!(shared.exit.reason(), Some(ExitReason::Timeout { .. })) && stats.ran {
        stats.final_state = Some(describe_state(&vcpu));
    }
    stats
}

/// Pin the calling thread as the plan says for vCPU `index`; the affinity read back.
fn pin_thread(shared: &VmShared, index: u32) -> Result<Option<Vec<u32>>, String> {
    match shared.plan.vcpu[index as usize].host_cpu {
        Some(cpu) => pin::pin_current_thread(cpu)
            .map(Some)
            .map_err(|e| format!("vCPU {index}: cannot pin its thread: {e}")),
        None => Ok(pin::current_affinity().ok()),
    }
}

/// Create vCPU `index` and configure it; vCPU 0 also reads the guest TSC frequency.
fn create(shared: &VmShared, index: u32) -> Result<VcpuFd, String> {
    let vcpu = shared
        .vm
        .create_vcpu(index as u64)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    if index == 0 {
        let khz = vcpu
            .get_tsc_khz()
            .map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
        let _ = shared.tsc_khz.set(khz);
    }
    configure(
        &vcpu,
        shared.supported_cpuid,
        shared.layout,
        index,
        shared.vcpus,
    )?;
    Ok(vcpu)
}

/// Put a fresh vCPU (number `index` of `vcpus`) into the state
/// `k42_abi::boot` documents: CPUID from the `supported` template, MSRs,
/// 64-bit segments and paging from `layout`, entry registers, LAPIC LINTs,
/// and runnable if it is an AP.
pub fn configure(
    vcpu: &VcpuFd,
    supported: &CpuId,
    layout: &BootLayout,
    index: u32,
    vcpus: u32,
) -> Result<(), String> {
    let cpuid = crate::cpuid::for_vcpu(supported, index, vcpus);
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    set_msrs(vcpu)?;
    set_long_mode(vcpu, layout)?;
    set_entry_regs(vcpu, layout, index)?;
    set_lint(vcpu)?;
    if index != 0 {
        // With the in-kernel irqchip an AP starts in wait-for-SIPI; this
        // guest starts APs directly in long mode instead.
        vcpu.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(|e| format!("KVM_SET_MP_STATE: {e}"))?;
    }
    Ok(())
}

/// Fast strings on, and write-back as the default memory type.
fn set_msrs(vcpu: &VcpuFd) -> Result<(), String> {
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;
    let entries = [
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&entries).map_err(|e| format!("MSR list: {e:?}"))?;
    let set = vcpu
        .set_msrs(&msrs)
        .map_err(|e| format!("KVM_SET_MSRS: {e}"))?;
    if set != entries.len() {
        return Err(format!("KVM_SET_MSRS set {set} of {} MSRs", entries.len()));
    }
    Ok(())
}

/// 64-bit kernel segments, the boot GDT, and paging on the boot page tables.
fn set_long_mode(vcpu: &VcpuFd, layout: &BootLayout) -> Result<(), String> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: k42_abi::layout::KERNEL_CS,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: k42_abi::layout::KERNEL_DS,
        type_: 0x3,
        l: 0,
        db: 1,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout.gdt_base;
    sregs.gdt.limit = layout.gdt_limit;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = 0x8005_0033; // PG | AM | WP | NE | ET | MP | PE
    sregs.cr3 = layout.cr3;
    sregs.cr4 = 0x6a0; // OSXMMEXCPT | OSFXSR | PGE | PAE
    sregs.efer = 0xd01; // NXE | LMA | LME | SCE
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))
}

/// Entry point, boot stack, arguments (vCPU index, boot magic) and a clean FPU.
fn set_entry_regs(vcpu: &VcpuFd, layout: &BootLayout, index: u32) -> Result<(), String> {
    let regs = kvm_regs {
        rip: layout.entry,
        rsp: layout.stack_top(index),
        rdi: index as u64,
        rsi: k42_abi::boot::BOOT_MAGIC,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| format!("KVM_SET_FPU: {e}"))
}

/// LINT0 as ExtINT and LINT1 as NMI, as firmware would leave them.
fn set_lint(vcpu: &VcpuFd) -> Result<(), String> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    for (off, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[off + i] as u8);
        let v = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| format!("KVM_SET_LAPIC: {e}"))
}

/// What the run loop does after an exit has been decoded.
enum Next {
    Continue,
    Stop,
    /// The guest hit something the kernel could not handle.
    Fault(&'static str, String),
    TripleFault,
    HostError(String),
    /// The hypercall block was unusable: report the error in `rax`.
    ErrorInRax(i64),
}

/// Run the vCPU until the VM stops: enter the guest, decode each exit, act on it.
fn run_loop(shared: &VmShared, vcpu: &mut VcpuFd, index: u32, stats: &mut VcpuStats) {
    loop {
        if shared.exit.is_stopping() {
            return;
        }
        note_first_entry(shared, index, stats);
        let next = match vcpu.run() {
            Ok(exit) => decode_exit(shared, index, stats, exit),
            Err(e) if e.errno() == libc::EINTR => {
                stats.count("interrupted");
                vcpu.set_kvm_immediate_exit(0);
                Next::Continue
            }
            Err(e) if e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::HostError(format!("KVM_RUN on vCPU {index}: {e}")),
        };
        if !act(shared, vcpu, index, next) {
            return;
        }
    }
}

/// On the first entry, note that the vCPU ran (and, for vCPU 0, the kernel entry time).
fn note_first_entry(shared: &VmShared, index: u32, stats: &mut VcpuStats) {
    if !stats.ran {
        stats.ran = true;
        if index == 0 {
            shared.clock.mark_kernel_entry();
        }
    }
}

/// Count one exit and decide what it means.
fn decode_exit(shared: &VmShared, index: u32, stats: &mut VcpuStats, exit: VcpuExit) -> Next {
    match exit {
        VcpuExit::IoOut(port, data) => io_out(shared, index, stats, port, data),
        VcpuExit::IoIn(port, data) => {
            io_in(shared, stats, port, data);
            Next::Continue
        }
        VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => {
            stats.count("mmio");
            Next::Fault(
                "MMIO",
                format!("the guest accessed guest-physical address {addr:#x}, which is not RAM"),
            )
        }
        VcpuExit::Shutdown => {
            stats.count("shutdown");
            Next::TripleFault
        }
        VcpuExit::Hlt => {
            stats.count("hlt");
            Next::Fault(
                "HLT",
                "the vCPU halted with no way to wake (HLT exit)".into(),
            )
        }
        VcpuExit::InternalError => {
            stats.count("internal-error");
            Next::Fault("internal-error", String::new())
        }
        VcpuExit::FailEntry(reason, cpu) => {
            stats.count("fail-entry");
            Next::Fault(
                "fail-entry",
                format!("KVM could not enter the guest (reason {reason:#x}, host CPU {cpu})"),
            )
        }
        VcpuExit::SystemEvent(kind, _) => {
            stats.count("system-event");
            Next::Fault(
                "system-event",
                format!("the guest raised system event {kind} (reset or crash)"),
            )
        }
        VcpuExit::Intr => {
            stats.count("interrupted");
            Next::Continue
        }
        other => {
            stats.count("other");
            Next::Fault("unexpected-exit", format!("unexpected VM exit {other:?}"))
        }
    }
}

/// A port write: a hypercall, COM1 output, or ignored.
fn io_out(shared: &VmShared, index: u32, stats: &mut VcpuStats, port: u16, data: &[u8]) -> Next {
    if port == k42_abi::hypercall::PORT {
        stats.count("hypercall");
        match <[u8; 4]>::try_from(data) {
            Ok(b) => match hypercall::handle(shared, index, u32::from_le_bytes(b)) {
                Outcome::Continue => Next::Continue,
                Outcome::Stop => Next::Stop,
                Outcome::BadBlock(code) => Next::ErrorInRax(code),
            },
            Err(_) => Next::ErrorInRax(k42_abi::HypercallResult::InvalidArgument as i64),
        }
    } else if Com1::owns(port) {
        stats.count("serial");
        if let Some(&b) = data.first() {
            shared
                .serial
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(port, b);
        }
        Next::Continue
    } else {
        stats.count("io-other");
        Next::Continue
    }
}

/// A port read: COM1 input, or all ones.
fn io_in(shared: &VmShared, stats: &mut VcpuStats, port: u16, data: &mut [u8]) {
    if Com1::owns(port) {
        stats.count("serial");
        let v = shared
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(port);
        data.fill(0);
        data[0] = v;
    } else {
        stats.count("io-other");
        data.fill(0xff);
    }
}

/// Act on a decoded exit; false when the vCPU must leave its run loop.
fn act(shared: &VmShared, vcpu: &mut VcpuFd, index: u32, next: Next) -> bool {
    match next {
        Next::Continue => true,
        Next::Stop => false,
        Next::ErrorInRax(code) => match set_rax(vcpu, code) {
            Ok(()) => true,
            Err(e) => {
                shared
                    .exit
                    .decide(ExitReason::HostError(format!("vCPU {index}: {e}")));
                false
            }
        },
        Next::TripleFault => {
            shared.exit.decide(ExitReason::TripleFault {
                vcpu: index,
                dump: register_dump(vcpu),
            });
            false
        }
        Next::Fault(kind, what) => {
            let what = if kind == "internal-error" {
                internal_error(vcpu)
            } else {
                what
            };
            shared.exit.decide(ExitReason::Fault {
                vcpu: index,
                what,
                dump: register_dump(vcpu),
            });
            false
        }
        Next::HostError(msg) => {
            shared.exit.decide(ExitReason::HostError(msg));
            false
        }
    }
}

fn set_rax(vcpu: &VcpuFd, value: i64) -> Result<(), String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rax = value as u64;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))
}

/// KVM's description of an internal error (usually an emulation failure).
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: called only right after KVM_RUN returned
    // KVM_EXIT_INTERNAL_ERROR, for which `internal` is the active member.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..n]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    let what = match internal.suberror {
        1 => "emulation failure (an instruction the KVM emulator cannot execute)",
        2 => "simultaneous exceptions",
        3 => "delivery event failure",
        _ => "internal error",
    };
    format!(
        "KVM internal error {}: {what} [{}]",
        internal.suberror,
        data.join(" ")
    )
}

/// Registers of a stopped vCPU, for fault reports.
pub fn register_dump(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    match vcpu.get_regs() {
        Ok(r) => {
            let _ = writeln!(
                s,
                "  rip {:#018x}  rsp {:#018x}  rflags {:#010x}",
                r.rip, r.rsp, r.rflags
            );
            let _ = writeln!(
                s,
                "  rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}",
                r.rax, r.rbx, r.rcx, r.rdx
            );
            let _ = writeln!(
                s,
                "  rsi {:#018x}  rdi {:#018x}  rbp {:#018x}  r8  {:#018x}",
                r.rsi, r.rdi, r.rbp, r.r8
            );
            let _ = writeln!(
                s,
                "  r9  {:#018x}  r10 {:#018x}  r11 {:#018x}  r12 {:#018x}",
                r.r9, r.r10, r.r11, r.r12
            );
            let _ = writeln!(
                s,
                "  r13 {:#018x}  r14 {:#018x}  r15 {:#018x}",
                r.r13, r.r14, r.r15
            );
        }
        Err(e) => {
            let _ = writeln!(s, "  (registers unavailable: {e})");
        }
    }
    if let Ok(sr) = vcpu.get_sregs() {
        let _ = writeln!(
            s,
            "  cr0 {:#010x}  cr2 {:#018x}  cr3 {:#010x}  cr4 {:#010x}  efer {:#x}",
            sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
        );
        let _ = writeln!(
            s,
            "  cs {:#06x} (dpl {})  ss {:#06x}  gdt {:#x}/{:#x}  idt {:#x}/{:#x}",
            sr.cs.selector,
            sr.cs.dpl,
            sr.ss.selector,
            sr.gdt.base,
            sr.gdt.limit,
            sr.idt.base,
            sr.idt.limit
        );
    }
    s
}

/// One-phrase state of a vCPU at a timeout.
fn describe_state(vcpu: &VcpuFd) -> String {
    let halted = vcpu
        .get_mp_state()
        .map(|m| m.mp_state == KVM_MP_STATE_HALTED)
        .unwrap_or(false);
    if halted {
        "halted".into()
    } else {
        match vcpu.get_regs() {
            Ok(r) => format!("running at rip {:#x}", r.rip),
            Err(_) => "running".into(),
        }
    }
}
