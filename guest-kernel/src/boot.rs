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
//! bench=platform[,cobj]       after the tests, run the platform and/or the
//!                             clustered-object benchmarks
//! cobj-ops=N                  operations per CPU per clustered-object case
//! probe=pvm|pvm-register      after the tests, probe for a PVM interface
//! ```

use k42_abi::{BootInfo, HypercallNr};

use crate::arch;
use crate::sync::InitOnce;

static BOOT_INFO: InitOnce<BootInfo> = InitOnce::new();
static OPTIONS: InitOnce<Options> = InitOnce::new();

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
    /// `probe=pvm` (false) or `probe=pvm-register` (true).
    pub probe_pvm: Option<bool>,
}

/// Fetch and check the boot info (boot CPU, once). Stops the VM with a
/// panic if the VMM's record is unusable.
pub fn fetch_boot_info() -> &'static BootInfo {
    let fetched = BOOT_INFO.init_in_place(|slot| {
        let pa = arch::virt_to_phys(slot as u64).expect("boot info in kernel memory");
        let r = arch::hypercall(
            HypercallNr::BootInfo,
            [pa, core::mem::size_of::<BootInfo>() as u64, 0, 0],
        );
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
        probe_pvm: None,
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
                        _ => {
                            return Err(bad(
                                word,
                                "bench= takes platform, cobj or both (bench=platform,cobj)",
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
                    "known options: test=, console=, crash=, bench=, probe=",
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
