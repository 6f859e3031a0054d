//! Tracing: the event record, the per-vCPU buffer layout in guest memory,
//! the registration record, and the event catalogue.
//!
//! The guest keeps one *trace region* in RAM, registered with
//! `HypercallNr::TraceRegister` once at boot:
//!
//! ```text
//! region  +0        RegionHeader (one page): geometry, the class mask word
//!         +4096     vCPU 0 area ┐
//!         +stride   vCPU 1 area │ area = CpuControl (one page)
//!         ...                   ┘        + nsubbufs sub-buffers of 2^shift bytes
//!
//! sub-buffer:  SubbufHeader (32 bytes) | event | event | ... | filler
//! event:       header word | payload words                 (compact)
//!              header word | id word | full TSC word | payload words
//!                                                          (extended)
//! ```
//!
//! Header word (little-endian `u64`), see [`EventHeader`]:
//!
//! ```text
//!  63      56 55     48 47           32 31                    0
//! | zero     | length  | id            | TSC, low 32 bits       |
//!   length: words in the event, header included (1..=255)
//!   id: class << 10 | minor;  0xffff (EXTENDED_ID): the real id and the
//!       full 64-bit TSC follow in the next two words;  0xfffe
//!       (FILLER_ID): the rest of the sub-buffer is unused
//! ```
//!
//! An event more than 2^32 TSC ticks after the previous one of its buffer
//! is extended, so a reader can always rebuild full timestamps from the
//! low 32 bits (CTF's rule). The layout is chosen so that CTF can describe
//! it as it is: the length byte is alignment padding there.
//!
//! Writers reserve space by compare-and-swap on a free-running byte
//! offset, write the payload, store the header word last, and add the
//! event's length to the sub-buffer's free-running commit count
//! (LTTng's scheme). The consumer (k42vmm) takes a sub-buffer when its
//! commit count shows every byte of it committed, zeroes it, and advances
//! its own free-running `consumed` offset, which releases the sub-buffer
//! to writers again. A writer that would have to enter a sub-buffer the
//! consumer still holds drops its event and counts it in `lost`: writers
//! never block, and every dropped event is counted. The full protocol is
//! in docs/TRACING.md; the writer and reader are the `k42-trace` crate.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `RegionHeader::magic`: "K42TRACE".
pub const REGION_MAGIC: u64 = 0x4543_4152_5432_344b;

/// Size of the region header, and offset of vCPU 0's area.
pub const REGION_HEADER_SIZE: u64 = 4096;
/// Size of each vCPU's control block (the first page of its area).
pub const CPU_CONTROL_SIZE: u64 = 4096;
/// Size of the header at the start of every sub-buffer.
pub const SUBBUF_HEADER_SIZE: u64 = 32;
/// Smallest sub-buffer: 2^12 bytes.
pub const MIN_SUBBUF_SHIFT: u32 = 12;
/// Largest sub-buffer: 2^24 bytes (16 MiB).
pub const MAX_SUBBUF_SHIFT: u32 = 24;
/// Fewest sub-buffers per vCPU.
pub const MIN_SUBBUFS: u32 = 2;
/// Most sub-buffers per vCPU (the commit-count array's length).
pub const MAX_SUBBUFS: u32 = 64;
/// Most classes: one mask bit each.
pub const MAX_CLASSES: usize = 64;
/// Bits of the minor id in an event id.
pub const MINOR_BITS: u32 = 10;
/// The header id of a filler: the rest of the sub-buffer is unused.
pub const FILLER_ID: u16 = 0xfffe;
/// The header id of an extended event: its id and full TSC follow.
pub const EXTENDED_ID: u16 = 0xffff;
/// Words an extended event has beyond a compact one.
pub const EXTENDED_EXTRA_WORDS: usize = 2;
/// Longest event in words (header, id and TSC words included).
pub const MAX_EVENT_WORDS: usize = 255;

/// Where user programs see the trace region: its header page (read-only)
/// at this address, and their CPU's area right after it (see
/// `crate::syscall::Syscall::TraceView`).
pub const USER_VIEW_BASE: u64 = 0x0000_7000_0000_0000;
const _: () = assert!(
    USER_VIEW_BASE >= crate::syscall::USER_BASE && USER_VIEW_BASE < crate::syscall::USER_TOP
);

/// The first page of the trace region.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RegionHeader {
    /// [`REGION_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] the guest was built against.
    pub abi_version: u32,
    /// Number of vCPU areas (the VM's vCPU count).
    pub ncpus: u32,
    /// log2 of the sub-buffer size in bytes.
    pub subbuf_shift: u32,
    /// Sub-buffers per vCPU, a power of two.
    pub nsubbufs: u32,
    /// Bytes from one vCPU area to the next:
    /// `CPU_CONTROL_SIZE + nsubbufs << subbuf_shift`.
    pub area_stride: u64,
    /// Guest TSC when the guest registered the region.
    pub register_tsc: u64,
    /// Zero.
    pub reserved: [u64; 3],
    /// Enabled classes, bit `c` for class `c`. Written by the guest and by
    /// k42vmm (at registration and on `trace mask`); writers read it
    /// before each event. On its own cache line.
    pub mask: u64,
    /// Zero.
    pub reserved2: [u64; 7],
}

/// Byte offset of [`RegionHeader::mask`] in the region.
pub const MASK_OFFSET: u64 = 64;
const _: () = assert!(core::mem::size_of::<RegionHeader>() == 128);
const _: () = assert!(core::mem::offset_of!(RegionHeader, mask) as u64 == MASK_OFFSET);

impl RegionHeader {
    /// Size of one sub-buffer in bytes.
    pub fn subbuf_size(&self) -> u64 {
        1 << self.subbuf_shift
    }

    /// Bytes of the whole region.
    pub fn region_len(&self) -> u64 {
        REGION_HEADER_SIZE + self.ncpus as u64 * self.area_stride
    }

    /// Check a header read from guest memory; `len` is the registered
    /// region length. Every number the host relies on is checked.
    pub fn validate(&self, len: u64) -> Result<(), &'static str> {
        if self.magic != REGION_MAGIC {
            return Err("the trace region has a bad magic number");
        }
        if self.abi_version != crate::ABI_VERSION {
            return Err("the trace region comes from a guest with another ABI version");
        }
        if self.ncpus == 0 || self.ncpus as usize > crate::MAX_VCPUS {
            return Err("the trace region has an impossible vCPU count");
        }
        if !(MIN_SUBBUF_SHIFT..=MAX_SUBBUF_SHIFT).contains(&self.subbuf_shift) {
            return Err("the trace sub-buffer size is out of range");
        }
        if !(MIN_SUBBUFS..=MAX_SUBBUFS).contains(&self.nsubbufs) || !self.nsubbufs.is_power_of_two()
        {
            return Err("the trace sub-buffer count is not a power of two in range");
        }
        if self.area_stride != CPU_CONTROL_SIZE + ((self.nsubbufs as u64) << self.subbuf_shift) {
            return Err("the trace area stride does not match its geometry");
        }
        if self.region_len() != len {
            return Err("the trace region length does not match its geometry");
        }
        Ok(())
    }
}

/// One vCPU's control block, the first page of its area. Writers update
/// `offset`, `last_tsc`, `lost` and `commit`; the consumer writes only
/// `consumed`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuControl {
    /// Free-running write offset in bytes: everything below it is reserved.
    pub offset: u64,
    /// TSC of a recently reserved event (never newer than the newest);
    /// an event more than 2^32 ticks after it carries a full TSC word.
    pub last_tsc: u64,
    /// Events dropped because every sub-buffer was full.
    pub lost: u64,
    /// Zero.
    pub reserved: [u64; 5],
    /// Free-running offset up to which the consumer has taken sub-buffers
    /// (a multiple of the sub-buffer size). Written by k42vmm only.
    pub consumed: u64,
    /// Zero.
    pub reserved2: [u64; 7],
    /// Free-running bytes committed into each sub-buffer: sub-buffer `i`
    /// in lap `l` is complete when `commit[i] == (l + 1) << subbuf_shift`.
    pub commit: [u64; MAX_SUBBUFS as usize],
}

/// Byte offsets in [`CpuControl`], for atomic access.
pub mod control {
    /// `CpuControl::offset`.
    pub const OFFSET: u64 = 0;
    /// `CpuControl::last_tsc`.
    pub const LAST_TSC: u64 = 8;
    /// `CpuControl::lost`.
    pub const LOST: u64 = 16;
    /// `CpuControl::consumed`.
    pub const CONSUMED: u64 = 64;
    /// `CpuControl::commit[0]`.
    pub const COMMIT: u64 = 128;
}
const _: () = assert!(core::mem::offset_of!(CpuControl, offset) as u64 == control::OFFSET);
const _: () = assert!(core::mem::offset_of!(CpuControl, last_tsc) as u64 == control::LAST_TSC);
const _: () = assert!(core::mem::offset_of!(CpuControl, lost) as u64 == control::LOST);
const _: () = assert!(core::mem::offset_of!(CpuControl, consumed) as u64 == control::CONSUMED);
const _: () = assert!(core::mem::offset_of!(CpuControl, commit) as u64 == control::COMMIT);
const _: () = assert!(core::mem::size_of::<CpuControl>() as u64 <= CPU_CONTROL_SIZE);

/// The header every sub-buffer starts with, written by the writer that
/// enters the sub-buffer. `tsc_begin` is stored last: non-zero means the
/// header is complete.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SubbufHeader {
    /// Free-running sub-buffer number (`offset >> subbuf_shift`).
    pub seq: u64,
    /// The vCPU's `lost` count just before this sub-buffer was entered.
    pub lost_begin: u64,
    /// TSC of the sub-buffer's first event.
    pub tsc_begin: u64,
    /// Zero.
    pub reserved: u64,
}
const _: () = assert!(core::mem::size_of::<SubbufHeader>() as u64 == SUBBUF_HEADER_SIZE);
/// Byte offset of `SubbufHeader::tsc_begin`.
pub const SUBBUF_TSC_BEGIN: u64 = 16;
const _: () = assert!(core::mem::offset_of!(SubbufHeader, tsc_begin) as u64 == SUBBUF_TSC_BEGIN);

/// An event's header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader(pub u64);

impl EventHeader {
    /// Build a header: TSC low bits, id, length in words.
    #[inline(always)]
    pub const fn new(tsc: u64, id: u16, len_words: u8) -> Self {
        Self((tsc & 0xffff_ffff) | (id as u64) << 32 | (len_words as u64) << 48)
    }

    /// The low 32 bits of the event's TSC.
    pub const fn tsc_low(self) -> u32 {
        self.0 as u32
    }

    /// The header id: an event id (`class << MINOR_BITS | minor`),
    /// [`EXTENDED_ID`] or [`FILLER_ID`].
    pub const fn id(self) -> u16 {
        (self.0 >> 32) as u16
    }

    /// Length in words, header included.
    pub const fn len_words(self) -> usize {
        (self.0 >> 48) as u8 as usize
    }

    /// Whether the event is extended: its id and full TSC follow.
    pub const fn extended(self) -> bool {
        self.id() == EXTENDED_ID
    }
}

/// The id of event `minor` of class `class`.
pub const fn event_id(class: u8, minor: u16) -> u16 {
    (class as u16) << MINOR_BITS | minor
}

/// The class bit of an event id.
pub const fn id_class(id: u16) -> u8 {
    (id >> MINOR_BITS) as u8
}

/// Whether `tsc` is too far after `last` for a header's 32 bits: then the
/// event is extended.
#[inline(always)]
pub const fn needs_full_tsc(tsc: u64, last: u64) -> bool {
    tsc.wrapping_sub(last) >> 32 != 0
}

/// Reconstruct a full TSC from its low 32 bits and the previous full TSC
/// of the same stream, assuming less than 2^32 ticks passed (CTF's rule).
pub const fn extend_tsc(prev: u64, low: u32) -> u64 {
    let candidate = (prev & !0xffff_ffff) | low as u64;
    if candidate < prev {
        candidate.wrapping_add(1 << 32)
    } else {
        candidate
    }
}

/// A trace class: one bit of the mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class(pub u8);

impl Class {
    /// The mask bit of this class.
    pub const fn bit(self) -> u64 {
        1 << self.0
    }
}

/// How a viewer should show an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A point in time.
    Instant,
    /// Starts a slice that the next `End` of the same class ends.
    Begin,
    /// Ends the innermost open slice of its class.
    End,
    /// Sets counters named after its fields.
    Counter,
}

/// How a payload word is typed and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Unsigned, shown in decimal.
    U64,
    /// Signed (two's complement), shown in decimal.
    I64,
    /// Unsigned, shown in hexadecimal.
    Hex,
    /// A system-call number ([`crate::syscall::Syscall`]), shown by its
    /// name from the system-call table.
    Syscall,
    /// A Linux x86_64 system-call number, shown by its Linux name
    /// (`openat`).
    LinuxSyscall,
}

impl FieldType {
    /// How a word of this type reads: a number, or a system call's name
    /// (`file.read`, `openat`; `None` for an unknown number, which tools
    /// show as `#99`).
    pub fn name_of(self, word: u64) -> Option<&'static str> {
        match self {
            Self::Syscall => crate::syscall::Syscall::from_raw(word).map(|c| c.name()),
            Self::LinuxSyscall => linux_syscall_name(word),
            _ => None,
        }
    }
}

/// The name of Linux x86_64 system call `nr` (`None` if Linux has none).
pub fn linux_syscall_name(nr: u64) -> Option<&'static str> {
    syscalls::x86_64::Sysno::new(usize::try_from(nr).ok()?).map(|s| s.name())
}

/// Every Linux x86_64 system call, as (number, name), in number order.
pub fn linux_syscalls() -> impl Iterator<Item = (u64, &'static str)> {
    syscalls::x86_64::Sysno::iter().map(|s| (s.id() as u64, s.name()))
}

/// One payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDesc {
    pub name: &'static str,
    pub ty: FieldType,
}

/// Everything the host needs to decode and name an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDesc {
    pub class: Class,
    pub minor: u16,
    /// `class << MINOR_BITS | minor`.
    pub id: u16,
    /// `class:event`, e.g. `interrupt:entry`.
    pub name: &'static str,
    pub kind: Kind,
    pub fields: &'static [FieldDesc],
    /// One line saying what the event records.
    pub doc: &'static str,
}

impl EventDesc {
    /// Words of an event of this kind without a full TSC word.
    pub const fn len_words(&self) -> usize {
        1 + self.fields.len()
    }
}

/// An event ready to log: its class, id and payload words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<const N: usize> {
    pub class: Class,
    pub id: u16,
    pub words: [u64; N],
}

#[doc(hidden)]
#[macro_export]
macro_rules! __trace_field_ty {
    (u64) => {
        u64
    };
    (hex) => {
        u64
    };
    (i64) => {
        i64
    };
    (syscall) => {
        u64
    };
    (linux_syscall) => {
        u64
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __trace_field_kind {
    (u64) => {
        $crate::trace::FieldType::U64
    };
    (hex) => {
        $crate::trace::FieldType::Hex
    };
    (i64) => {
        $crate::trace::FieldType::I64
    };
    (syscall) => {
        $crate::trace::FieldType::Syscall
    };
    (linux_syscall) => {
        $crate::trace::FieldType::LinuxSyscall
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __trace_kind {
    (instant) => {
        $crate::trace::Kind::Instant
    };
    (begin) => {
        $crate::trace::Kind::Begin
    };
    (end) => {
        $crate::trace::Kind::End
    };
    (counter) => {
        $crate::trace::Kind::Counter
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __trace_one {
    ($x:tt) => {
        1
    };
}

/// Defines the catalogue: for every class a [`Class`] constant and a
/// module of event constructors; for every event a descriptor in
/// [`EVENTS`]. The guest logs `ev::interrupt::entry(vector)`; the host
/// decodes with [`event_desc`].
macro_rules! catalogue {
    ($(
        $(#[doc = $cdoc:literal])*
        class $cmod:ident = $bit:literal {
            $(
                $(#[doc = $edoc:literal])*
                $event:ident = $minor:literal $kind:ident ( $($field:ident : $fty:ident),* );
            )*
        }
    )*) => {
        /// The classes, by name.
        pub mod class {
            use super::Class;
            $(
                $(#[doc = $cdoc])*
                #[allow(non_upper_case_globals)]
                pub const $cmod: Class = Class($bit);
            )*
        }

        /// Every class with its name, in bit order.
        pub const CLASSES: &[(Class, &str)] = &[$((Class($bit), stringify!($cmod)),)*];

        /// Event constructors, one module per class.
        pub mod ev {
            $(
                $(#[doc = $cdoc])*
                #[allow(unused_imports)]
                pub mod $cmod {
                    use $crate::trace::{Class, Event, event_id};
                    $(
                        $(#[doc = $edoc])*
                        #[inline(always)]
                        // One argument per field (`linux:enter` has eight).
                        #[allow(clippy::too_many_arguments)]
                        pub const fn $event($($field: $crate::__trace_field_ty!($fty)),*)
                            -> Event<{ 0 $(+ $crate::__trace_one!($field))* }> {
                            Event {
                                class: Class($bit),
                                id: event_id($bit, $minor),
                                words: [$($field as u64),*],
                            }
                        }
                    )*
                }
            )*
        }

        /// Every event of the catalogue.
        pub static EVENTS: &[EventDesc] = &[$($(
            EventDesc {
                class: Class($bit),
                minor: $minor,
                id: event_id($bit, $minor),
                name: concat!(stringify!($cmod), ":", stringify!($event)),
                kind: $crate::__trace_kind!($kind),
                fields: &[$(FieldDesc {
                    name: stringify!($field),
                    ty: $crate::__trace_field_kind!($fty),
                }),*],
                doc: concat!("" $(, $edoc)*),
            },
        )*)*];
    };
}

catalogue! {
    /// Boot milestones.
    class boot = 0 {
        /// Tracing is on: the region's geometry.
        tracing_on = 1 instant(ncpus: u64, subbuf_bytes: u64, nsubbufs: u64);
        /// A CPU finished its bring-up.
        cpu_online = 2 instant(cpu: u64);
        /// Every CPU is online.
        all_online = 3 instant(ncpus: u64);
        /// The in-kernel tests start.
        tests_begin = 4 instant(count: u64);
        /// The in-kernel tests ended.
        tests_end = 5 instant(failed: u64);
        /// The kernel asks k42vmm to stop the VM.
        shutdown = 6 instant(code: u64);
    }
    /// Interrupt entry and exit (vectors 32 and up).
    class interrupt = 1 {
        /// An interrupt handler starts.
        entry = 1 begin(vector: hex);
        /// An interrupt handler returns.
        exit = 2 end(vector: hex);
    }
    /// The TSC-deadline timer.
    class timer = 2 {
        /// The timer is armed for a TSC deadline (0 disarms).
        arm = 1 instant(deadline: u64);
        /// The timer interrupt ran, this many TSC ticks after its deadline.
        fire = 2 instant(late: u64);
    }
    /// Inter-processor interrupts.
    class ipi = 3 {
        /// An IPI is sent to one CPU.
        send = 1 instant(target: u64, vector: hex);
        /// An IPI is sent to every other CPU.
        broadcast = 2 instant(vector: hex);
        /// A wakeup IPI arrived.
        wakeup = 3 instant();
    }
    /// Halting in the idle loop or a wait.
    class idle = 4 {
        /// The CPU halts.
        enter = 1 begin();
        /// The CPU woke up.
        exit = 2 end();
    }
    /// Processes and the scheduler.
    class sched = 5 {
        /// A process was created (spawn or fork).
        spawn = 1 instant(pid: u64, parent: u64);
        /// A process ended with this status word.
        exit = 2 instant(pid: u64, status: hex);
        /// This CPU switched to a thread.
        switch = 3 instant(pid: u64, tid: u64);
        /// A user page fault was resolved.
        fault = 4 instant(pid: u64, address: hex);
        /// A PPC call enters server `server` (its pid) with `method`.
        ppc_call = 5 instant(server: u64, method: u64);
        /// A PPC call returns from server `server` with `result`.
        ppc_return = 6 instant(server: u64, result: i64);
        /// A user page fault was taken (before it is resolved: the time
        /// to the `fault` event is the kernel's resolution).
        fault_taken = 7 instant(pid: u64, address: hex);
    }
    /// Hypercalls to k42vmm.
    class hypercall = 6 {
        /// A hypercall is made.
        enter = 1 begin(nr: u64);
        /// A hypercall returned.
        exit = 2 end(nr: u64, result: i64);
    }
    /// Physical memory.
    class mem = 7 {
        /// Free frames after a change of the frame allocator's state.
        free_frames = 1 counter(frames: u64);
    }
        /// Clustered objects.
    class cobj = 8 {
        /// A call missed in its CPU's local table and went to the root.
        miss = 1 instant(obj: u64);
        /// A hot swap (or interposition) starts its forward phase.
        swap_begin = 2 begin(obj: u64, format: i64);
        /// The swap's forward phase ended; new calls block from now on.
        swap_block = 3 instant(obj: u64, forward_ns: u64);
        /// The swap switched to the new root; blocked calls go on.
        swap_end = 4 end(obj: u64, blocked_ns: u64);
        /// An object was destroyed (after quiescence).
        destroy = 5 instant(obj: u64);
    }
    /// Benchmarks.
    class bench = 9 {
        /// The tracing benchmark's three-word event.
        event3 = 1 instant(a: u64, b: u64, c: u64);
        /// A benchmark phase starts.
        phase_begin = 2 begin(phase: u64);
        /// A benchmark phase ends.
        phase_end = 3 end(phase: u64);
    }
    /// In-kernel tests.
    class test = 10 {
        /// A test starts.
        begin = 1 begin(index: u64);
        /// A test ended.
        end = 2 end(index: u64, passed: u64);
        /// One event of a counted burst.
        burst = 3 instant(cpu: u64, seq: u64, magic: hex);
        /// One tick of a steady stream.
        tick = 4 instant(cpu: u64, seq: u64);
    }
    /// File memory objects (the file server's requests themselves are
    /// `sched:ppc_call`/`ppc_return` with the `k42_abi::fs` method).
    class fs = 11 {
        /// A file object was made (kind 0 shared, 1 distributed index).
        create = 1 instant(pid: u64, kind: u64);
        /// A read: the bytes read at `offset`.
        read = 2 instant(pid: u64, offset: u64, bytes: u64);
        /// A write: `bytes` at `offset` (the end for an append).
        write = 3 instant(pid: u64, offset: u64, bytes: u64);
        /// A file's size was set.
        truncate = 4 instant(pid: u64, size: u64);
        /// A file was mapped.
        map = 5 instant(pid: u64, bytes: u64);
    }
    /// System calls, as `strace` shows them (off unless asked for: a
    /// trace mask of `all` or naming `syscall`). Numbers are
    /// `k42_abi::syscall::Syscall`; trace tools print its name.
    class syscall = 12 {
        /// A call: its number and first three argument registers.
        enter = 1 instant(nr: syscall, a0: hex, a1: hex, a2: hex);
        /// The call returned to its caller on this CPU with `result` (< 0:
        /// a `SyscallError`). A call that blocked or handed the CPU to
        /// another thread (wait, PPC) has no exit event here.
        exit = 2 instant(nr: syscall, result: i64);
        /// Process `pid` made Linux system call `nr` (a Linux x86_64
        /// number), which the personality does not implement (ENOSYS).
        unimplemented = 3 instant(pid: u64, nr: u64);
    }
    /// Linux system calls served by the personality, for `k42vmm trace
    /// strace` (off unless asked for: a trace mask of `all` or naming
    /// `linux`). `pid` is the calling process's, stamped by the kernel
    /// (`LinuxTrace`); `nr` is a Linux x86_64 number, shown by its name.
    class linux = 13 {
        /// A Linux call starts: its number and six argument registers.
        enter = 1 instant(pid: u64, nr: linux_syscall, a0: hex, a1: hex, a2: hex, a3: hex, a4: hex, a5: hex);
        /// A Linux call returns to the program with `result` (-4095..-1:
        /// an errno, or one of Linux's internal restart codes). Calls that
        /// do not return (exit, a successful execve) have none.
        exit = 2 instant(pid: u64, nr: linux_syscall, result: i64);
        /// Signal `sig` is delivered to a handler at `handler`.
        signal = 3 instant(pid: u64, sig: u64, handler: hex);
    }
}

/// The descriptor of event `id`, if the catalogue has one.
pub fn event_desc(id: u16) -> Option<&'static EventDesc> {
    EVENTS.iter().find(|e| e.id == id)
}

/// The name of class `c`, if the catalogue has one.
pub fn class_name(c: Class) -> Option<&'static str> {
    CLASSES.iter().find(|(k, _)| *k == c).map(|(_, n)| *n)
}

/// The class named `name`.
pub fn class_by_name(name: &str) -> Option<Class> {
    CLASSES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// Mask of every class in the catalogue.
pub fn all_classes_mask() -> u64 {
    CLASSES.iter().fold(0, |m, (c, _)| m | c.bit())
}

/// Classes logged only when asked for by name or with `all` (they are
/// frequent enough to crowd out the rest): `syscall`, `linux`.
pub const OFF_BY_DEFAULT: u64 = class::syscall.bit() | class::linux.bit();

/// The mask a trace starts with when none is given: every class but
/// [`OFF_BY_DEFAULT`].
pub fn default_mask() -> u64 {
    all_classes_mask() & !OFF_BY_DEFAULT
}

/// Parse a class list: `all`, `none`, a hexadecimal mask (`0x…`), or
/// comma-separated class names. On error returns the word at fault.
pub fn parse_mask(text: &str) -> Result<u64, &str> {
    match text {
        "all" => return Ok(all_classes_mask()),
        "none" => return Ok(0),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).map_err(|_| text);
    }
    let mut mask = 0;
    for word in text.split(',') {
        mask |= class_by_name(word).ok_or(word)?.bit();
    }
    Ok(mask)
}

/// A fingerprint of the catalogue (FNV-1a over ids, names and field
/// types), so that a trace reader can tell a trace written with another
/// catalogue.
pub fn catalogue_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for e in EVENTS {
        eat(&e.id.to_le_bytes());
        eat(e.name.as_bytes());
        eat(&[e.kind as u8]);
        for f in e.fields {
            eat(f.name.as_bytes());
            eat(&[f.ty as u8]);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        for (i, e) in EVENTS.iter().enumerate() {
            assert!((e.class.0 as usize) < MAX_CLASSES - 1, "{}", e.name);
            assert!(e.minor > 0 && e.minor < 1 << MINOR_BITS, "{}", e.name);
            assert_ne!(e.id, FILLER_ID);
            assert_ne!(e.id, EXTENDED_ID);
            assert_eq!(id_class(e.id), e.class.0);
            // Room for the full TSC word too.
            assert!(e.len_words() < MAX_EVENT_WORDS);
            assert!(class_name(e.class).is_some(), "{} has no class", e.name);
            assert!(e.name.starts_with(class_name(e.class).unwrap()));
            assert!(!e.doc.is_empty(), "{} is undocumented", e.name);
            for other in &EVENTS[i + 1..] {
                assert_ne!(e.id, other.id, "{} and {}", e.name, other.name);
                assert_ne!(e.name, other.name);
            }
        }
        for (i, (c, n)) in CLASSES.iter().enumerate() {
            for (c2, n2) in &CLASSES[i + 1..] {
                assert_ne!(c, c2);
                assert_ne!(n, n2);
            }
        }
        let required = [
            "boot",
            "interrupt",
            "timer",
            "ipi",
            "idle",
            "sched",
            "hypercall",
            "mem",
            "cobj",
            "bench",
            "test",
        ];
        for name in required {
            assert!(class_by_name(name).is_some(), "class {name} missing");
        }
    }

    #[test]
    fn constructors_match_descriptors() {
        let e = ev::bench::event3(1, 2, 3);
        let d = event_desc(e.id).unwrap();
        assert_eq!(d.name, "bench:event3");
        assert_eq!(d.fields.len(), 3);
        assert_eq!(e.words, [1, 2, 3]);
        assert_eq!(e.class, class::bench);
        let h = ev::hypercall::exit(4, -2);
        assert_eq!(h.words[1] as i64, -2);
        assert_eq!(ev::idle::enter().words.len(), 0);
    }

    #[test]
    fn linux_class_is_off_by_default_and_named() {
        assert_eq!(class_by_name("linux"), Some(class::linux));
        assert_eq!(default_mask() & class::linux.bit(), 0);
        assert_eq!(default_mask() & class::syscall.bit(), 0);
        assert_ne!(all_classes_mask() & class::linux.bit(), 0);
        // The kernel stamps the pid as every linux event's first field.
        for e in EVENTS.iter().filter(|e| e.class == class::linux) {
            assert_eq!(e.fields[0].name, "pid", "{}", e.name);
        }
        let e = ev::linux::enter(7, 257, 1, 2, 3, 4, 5, 6);
        let d = event_desc(e.id).unwrap();
        assert_eq!(d.name, "linux:enter");
        assert_eq!(d.fields[1].ty, FieldType::LinuxSyscall);
        assert_eq!(e.words, [7, 257, 1, 2, 3, 4, 5, 6]);
        assert_eq!(FieldType::LinuxSyscall.name_of(257), Some("openat"));
        assert_eq!(FieldType::LinuxSyscall.name_of(59), Some("execve"));
        assert_eq!(FieldType::LinuxSyscall.name_of(100_000), None);
        assert_eq!(FieldType::LinuxSyscall.name_of(u64::MAX), None);
        assert!(linux_syscalls().any(|(n, name)| n == 0 && name == "read"));
    }

    #[test]
    fn header_round_trips() {
        let h = EventHeader::new(0x1_2345_6789, event_id(3, 7), 4);
        assert_eq!(h.tsc_low(), 0x2345_6789);
        assert_eq!(h.id(), event_id(3, 7));
        assert_eq!(id_class(h.id()), 3);
        assert_eq!(h.len_words(), 4);
        assert!(!h.extended());
        assert!(EventHeader::new(5, EXTENDED_ID, 3).extended());
        assert_ne!(EventHeader::new(0, 0, 1).0, 0, "a header is never zero");
    }

    #[test]
    fn timestamps_extend_across_wraps() {
        assert_eq!(extend_tsc(0x5_ffff_fff0, 0x10), 0x6_0000_0010);
        assert_eq!(extend_tsc(0x5_0000_0010, 0x20), 0x5_0000_0020);
        assert_eq!(extend_tsc(0x5_0000_0010, 0x10), 0x5_0000_0010);
        assert!(needs_full_tsc(1 << 32, 0));
        assert!(!needs_full_tsc((1 << 32) - 1, 0));
    }

    #[test]
    fn masks_parse() {
        assert_eq!(parse_mask("none"), Ok(0));
        assert_eq!(parse_mask("all"), Ok(all_classes_mask()));
        assert_eq!(
            parse_mask("interrupt,idle"),
            Ok(class::interrupt.bit() | class::idle.bit())
        );
        assert_eq!(parse_mask("0x5"), Ok(5));
        assert_eq!(parse_mask("interrupt,bogus"), Err("bogus"));
        assert_eq!(parse_mask("0xzz"), Err("0xzz"));
    }

    #[test]
    fn region_header_validates() {
        let mut h = RegionHeader::new_zeroed_for_test();
        assert!(h.validate(0).is_err());
        h.magic = REGION_MAGIC;
        h.abi_version = crate::ABI_VERSION;
        h.ncpus = 2;
        h.subbuf_shift = 12;
        h.nsubbufs = 4;
        h.area_stride = CPU_CONTROL_SIZE + 4 * 4096;
        let len = h.region_len();
        assert!(h.validate(len).is_ok());
        assert!(h.validate(len + 1).is_err());
        h.nsubbufs = 3;
        assert!(h.validate(len).is_err());
        h.nsubbufs = 4;
        h.subbuf_shift = 40;
        assert!(h.validate(len).is_err());
    }

    impl RegionHeader {
        fn new_zeroed_for_test() -> Self {
            zerocopy::FromZeros::new_zeroed()
        }
    }
}
