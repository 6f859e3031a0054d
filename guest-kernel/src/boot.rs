//! Boot information and the kernel command line.
//!
//! The boot CPU fetches the [`BootInfo`] from k42vmm by hypercall into a
//! static buffer, checks it, and parses the command line into [`Options`]
//! before any other CPU starts; both are read-only afterwards.
//!
//! Command line (space-separated):
//!
//! ```text
//! test=all|none|NAME[,NAME…]  in-kernel tests to run (default all)
//! console=hypercall|serial    console path (default hypercall)
//! crash=panic|pagefault|triple|hang
//!                             provoke a failure, to test k42vmm's handling
//! bench=platform|cobj|trace[,…]
//!                             after the tests, run the platform, the
//!                             clustered-object and/or the tracing benchmarks
//! cobj-ops=N                  operations per CPU per clustered-object case
//! probe=pvm|pvm-register      after the tests, probe for a PVM interface
//! trace.subbuf=SIZE           trace sub-buffer size: a power of two, 4K-16M
//!                             (default 16K)
//! trace.subbufs=N             trace sub-buffers per CPU: a power of two,
//!                             2-64 (default 4)
//! trace.burst=N               events per CPU of the trace.burst test (64)
//! trace.ticks=MS              how long the trace.ticks test runs (200)
//! init=PROGRAM|none           after the tests and benchmarks, start this
//!                             image program as process 1 with the lines of
//!                             the `init.rc` module as its arguments; the
//!                             VM exits with its status (default none)
//! init.run=LINE[,LINE…]      init's lines instead of init.rc's, `+` for a
//!                             space: `init.run=hello,proctest+fork`
//! proc.max=N                  most processes alive at once, zombies
//!                             included (1-1024, default 64)
//! proc.mem=SIZE               most memory one process may touch
//!                             (default 64M)
//! file.max=N                  most file memory objects alive at once
//!                             (1-65536, default 1024)
//! ```

use k42_abi::{BootInfo, Hypercall};

use crate::arch;
use crate::sync::InitOnce;

static BOOT_INFO: InitOnce<BootInfo> = InitOnce::new();
static OPTIONS: InitOnce<Options> = InitOnce::new();

/// The parsed command line (after `parse_options`).
pub fn options() -> &'static Options {
    OPTIONS.get().expect("options parsed at boot")
}

/// Which in-kernel tests to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestSelection {
    All,
    None,
    /// A comma-separated list of test names.
    Named(&'static str),
}

/// A failure to provoke on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    Panic,
    PageFault,
    TripleFault,
    Hang,
}

/// Parsed kernel command line.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub tests: TestSelection,
    pub serial_console: bool,
    pub crash: Option<Crash>,
    pub bench_platform: bool,
    pub bench_cobj: bool,
    /// Operations per CPU per case for `bench=cobj` (0: the program's
    /// default).
    pub cobj_ops: u64,
    pub bench_trace: bool,
    /// `probe=pvm` (false) or `probe=pvm-register` (true).
    pub probe_pvm: Option<bool>,
    pub trace: TraceOptions,
    /// The program started as process 1, if any.
    pub init: Option<&'static str>,
    /// init's lines (`,`-separated, `+` for a space) instead of init.rc.
    pub init_run: Option<&'static str>,
    /// Most processes alive at once.
    pub proc_max: u32,
    /// Most bytes of memory one process may touch.
    pub proc_mem: u64,
    /// Most file memory objects alive at once.
    pub file_max: u32,
}

/// The `trace.*` options.
#[derive(Clone, Copy, Debug)]
pub struct TraceOptions {
    /// Each CPU's buffers.
    pub geometry: k42_trace::Geometry,
    /// Events per CPU the `trace.burst` test logs.
    pub burst: u32,
    /// Milliseconds the `trace.ticks` test runs.
    pub ticks_ms: u32,
}

/// Parse a size: digits with an optional K or M suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Fetch and check the boot info (boot CPU, once). Stops the VM with a
/// panic if the VMM's record is unusable.
pub fn fetch_boot_info() -> &'static BootInfo {
    let fetched = BOOT_INFO.init_in_place(|slot| {
        let pa = arch::virt_to_phys(slot as u64).expect("boot info in kernel memory");
        let r = arch::hypercall(Hypercall::boot_info(
            pa,
            core::mem::size_of::<BootInfo>() as u64,
        ));
        if r != 0 {
            return Err("the BootInfo hypercall failed");
        }
        // SAFETY: k42vmm wrote a whole BootInfo at `slot`, and every bit
        // pattern is a valid BootInfo (plain integers and arrays).
        unsafe { &*slot }.validate()
    });
    fetched.unwrap_or_else(|e| panic!("{e}"))
}

/// The boot info (after `fetch_boot_info`).
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO.get().expect("boot info fetched at boot")
}

/// The bytes of the boot module named `name`.
pub fn module_bytes(name: &str) -> Option<&'static [u8]> {
    let m = boot_info()
        .modules()
        .iter()
        .find(|m| m.name() == Some(name))?;
    // SAFETY: k42vmm loaded the module there, in RAM reserved for it and
    // never handed to the frame allocator, and nothing writes it; it is
    // mapped in the direct map.
    Some(unsafe {
        core::slice::from_raw_parts(arch::phys_to_virt(m.start) as *const u8, m.len as usize)
    })
}

/// An unknown or malformed command-line option.
#[derive(Clone, Copy, Debug)]
pub struct BadOption {
    pub word: &'static str,
    pub hint: &'static str,
}

impl core::fmt::Display for BadOption {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            f,
            "bad kernel command-line option '{}': {}",
            self.word, self.hint
        )
    }
}

/// Parse the command line; on an unknown or malformed option return what
/// is wrong with it.
pub fn parse_options(cmdline: &'static str) -> Result<&'static Options, BadOption> {
    let mut opts = Options {
        tests: TestSelection::All,
        serial_console: false,
        crash: None,
        bench_platform: false,
        bench_cobj: false,
        cobj_ops: 0,
        bench_trace: false,
        probe_pvm: None,
        trace: TraceOptions {
            geometry: k42_trace::Geometry::new(
                crate::trace::DEFAULT_SUBBUF_SHIFT,
                crate::trace::DEFAULT_SUBBUFS,
            )
            .expect("the default trace geometry is valid"),
            burst: 64,
            ticks_ms: 200,
        },
        init: None,
        init_run: None,
        proc_max: 64,
        proc_mem: 64 << 20,
        file_max: 1024,
    };
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let ok = match key {
            "test" => {
                opts.tests = match value {
                    "all" => TestSelection::All,
                    "none" => TestSelection::None,
                    "" => return Err(bad(word, "give test=all, test=none or test=NAME[,NAME...]")),
                    names => TestSelection::Named(names),
                };
                true
            }
            "console" => match value {
                "serial" => {
                    opts.serial_console = true;
                    true
                }
                "hypercall" => {
                    opts.serial_console = false;
                    true
                }
                _ => false,
            },
            "crash" => {
                opts.crash = Some(match value {
                    "panic" => Crash::Panic,
                    "pagefault" => Crash::PageFault,
                    "triple" => Crash::TripleFault,
                    "hang" => Crash::Hang,
                    _ => return Err(bad(word, "crash= takes panic, pagefault, triple or hang")),
                });
                true
            }
            "bench" => {
                for b in value.split(',') {
                    match b {
                        "platform" => opts.bench_platform = true,
                        "cobj" => opts.bench_cobj = true,
                        "trace" => opts.bench_trace = true,
                        _ => {
                            return Err(bad(
                                word,
                                "bench= takes platform, cobj, trace or several (bench=platform,cobj)",
                            ));
                        }
                    }
                }
                true
            }
            "cobj-ops" => match value.parse() {
                Ok(n) => {
                    opts.cobj_ops = n;
                    true
                }
                Err(_) => return Err(bad(word, "cobj-ops= takes a number of operations")),
            },
            "trace.subbuf" => {
                let g = parse_size(value)
                    .filter(|s| s.is_power_of_two())
                    .and_then(|s| {
                        k42_trace::Geometry::new(s.trailing_zeros(), opts.trace.geometry.nsubbufs)
                    })
                    .ok_or(bad(
                        word,
                        "trace.subbuf= takes a power of two from 4K to 16M",
                    ))?;
                opts.trace.geometry = g;
                true
            }
            "trace.subbufs" => {
                let g = value
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| k42_trace::Geometry::new(opts.trace.geometry.subbuf_shift, n))
                    .ok_or(bad(
                        word,
                        "trace.subbufs= takes a power of two from 2 to 64",
                    ))?;
                opts.trace.geometry = g;
                true
            }
            "trace.burst" => {
                opts.trace.burst = value
                    .parse()
                    .map_err(|_| bad(word, "trace.burst= takes a number of events"))?;
                true
            }
            "trace.ticks" => {
                opts.trace.ticks_ms = value
                    .parse()
                    .map_err(|_| bad(word, "trace.ticks= takes milliseconds"))?;
                true
            }
            "init" => {
                opts.init = match value {
                    "none" => None,
                    "" => return Err(bad(word, "init= takes a program name or none")),
                    name => Some(name),
                };
                true
            }
            "init.run" => {
                if value.is_empty() {
                    return Err(bad(
                        word,
                        "init.run= takes lines: init.run=hello,proctest+fork",
                    ));
                }
                opts.init_run = Some(value);
                true
            }
            "proc.max" => {
                opts.proc_max = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::proc::MAX_PROCS).contains(n))
                    .ok_or(bad(word, "proc.max= takes a number from 1 to 1024"))?;
                true
            }
            "proc.mem" => {
                opts.proc_mem = parse_size(value)
                    .filter(|&s| s >= 64 << 10)
                    .ok_or(bad(word, "proc.mem= takes a size of at least 64K"))?;
                true
            }
            "file.max" => {
                opts.file_max = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::proc::files::MAX_FILES).contains(n))
                    .ok_or(bad(word, "file.max= takes a number from 1 to 65536"))?;
                true
            }
            "probe" => match value {
                "pvm" | "pvm-register" => {
                    opts.probe_pvm = Some(value == "pvm-register");
                    true
                }
                _ => return Err(bad(word, "probe= takes pvm or pvm-register")),
            },
            _ => {
                return Err(bad(
                    word,
                    "known options: test=, console=, crash=, bench=, cobj-ops=, probe=, trace.subbuf=, trace.subbufs=, trace.burst=, trace.ticks=, init=, init.run=, proc.max=, proc.mem=, file.max=",
                ));
            }
        };
        if !ok {
            return Err(bad(word, "console= takes hypercall or serial"));
        }
    }
    Ok(OPTIONS.set(opts))
}

fn bad(word: &'static str, hint: &'static str) -> BadOption {
    BadOption { word, hint }
}
