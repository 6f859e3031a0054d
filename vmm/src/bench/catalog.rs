//! The benchmark catalogue: every benchmark `k42vmm bench` can sweep and
//! every suite, described by data. Adding a benchmark is one entry in
//! [`BENCHMARKS`] (and its name in a suite).
//!
//! A benchmark is one kernel command line run on a fresh VM, and one or
//! more *series* (implementations of the same interface, or the same
//! code in different modes), each made of the guest's
//! [`BenchRecord`](k42_abi::bench::BenchRecord)s with one name and mode.
//! Every series reports one record per vCPU; the host turns a boot's
//! records into one throughput figure by the rule in
//! [`results::throughput`](super::results::throughput).
//!
//! ```text
//! Benchmark "cobj.counter"  cmdline "test=none bench=cobj"
//!   ├─ series "shared"       ← records "cobj.counter.shared" (user), one per vCPU
//!   ├─ series "partitioned"  ← records "cobj.counter.partitioned" (user)
//!   └─ series "adaptive"     ← …
//! ```
//!
//! `cobj-bench` also reports `cobj.miss` (32 first calls per vCPU, a few
//! microseconds in all) and `cobj.swap.blocked` (eight swap latencies from
//! vCPU 0): latencies rather than throughputs that scale, so no benchmark
//! here sweeps them.

use k42_abi::bench::BenchMode;

/// One implementation (or mode) measured by a benchmark: the guest
/// records that make up its throughput.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// Short label for tables, plots and reports (`shared`, `user`).
    pub label: &'static str,
    /// The [`BenchRecord`](k42_abi::bench::BenchRecord) name the guest
    /// reports (at most [`k42_abi::bench::MAX_BENCH_NAME`] bytes).
    pub record: &'static str,
    /// Where the measured code runs.
    pub mode: BenchMode,
}

/// A benchmark: what to boot and which records to read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Benchmark {
    /// Name used on the command line and in results (`platform.spin`).
    pub name: &'static str,
    /// One line saying what it measures.
    pub description: &'static str,
    /// The kernel command line that runs it. Benchmarks with the same
    /// command line are measured in the same boots.
    pub cmdline: &'static str,
    /// What the throughput counts, for axis labels (`spin iterations`).
    pub op: &'static str,
    /// The implementations (or modes) it compares.
    pub series: &'static [Series],
    /// Stop a boot that runs longer than this, in seconds.
    pub timeout_s: u64,
}

/// A named set of benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    pub name: &'static str,
    pub description: &'static str,
    pub benchmarks: &'static [&'static str],
}

const PLATFORM_CMDLINE: &str = "test=none bench=platform";

/// `cobj-bench` with its default size (2 000 000 operations per vCPU per
/// case: a few to a few tens of milliseconds each).
const COBJ_CMDLINE: &str = "test=none bench=cobj";

/// `bench=trace` with per-vCPU trace buffers (4 × 1 MiB) that hold the
/// whole user-mode loop (65 536 events), so nothing is dropped without a
/// collector draining them.
const TRACE_CMDLINE: &str = "test=none bench=trace trace.subbuf=1M trace.subbufs=4";

/// `proc-bench` as the only program init runs: a process per benchmark
/// part, threads and processes kept on each vCPU (sizes: 2000 system
/// calls, 64 pages and 20 fork cycles per vCPU).
const PROC_CMDLINE: &str = "test=none init=init init.run=proc-bench";

/// `ppctest bench`: a server process and a client thread kept on each
/// vCPU, 1000 echo calls each.
const PPC_CMDLINE: &str = "test=none init=init init.run=ppctest+bench+1000";

/// `fs-bench ops`: the name server, the file server, and a thread kept
/// on each vCPU reading 4 KiB pages of one shared 1 MiB file (2000 reads
/// each), once with a shared and once with a distributed page index.
const FS_OPS_CMDLINE: &str =
    "test=none init=init init.run=nameserver+&,fileserver+&,fs-bench+ops+2000";

/// `fs-bench postmark`: one Postmark instance per vCPU with Postmark
/// 1.5's file sizes, block size and biases, its pool and transaction
/// counts scaled to a fifth (100 files, 100 transactions), so that a 1–16
/// vCPU sweep takes minutes; `fs-bench postmark 500 500` is the full
/// default. Room for 16 384 files.
const FS_POSTMARK_CMDLINE: &str = "test=none file.max=16384 init=init init.run=nameserver+&,fileserver+&,fs-bench+postmark+100+100";

/// A user-mode series made of the records called `record`.
const fn user(label: &'static str, record: &'static str) -> Series {
    Series {
        label,
        record,
        mode: BenchMode::User,
    }
}

/// Every benchmark, in the order `k42vmm bench list` shows them.
pub const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "platform.spin",
        description: "the k42-loops spin loop in guest user mode on every vCPU at once (native on KVM-PVM)",
        cmdline: PLATFORM_CMDLINE,
        op: "spin iterations",
        series: &[user("user", "platform.spin")],
        timeout_s: 300,
    },
    Benchmark {
        name: "platform.syscall",
        description: "null system-call round trips from user mode on every vCPU at once (through the kernel's #UD entry)",
        cmdline: PLATFORM_CMDLINE,
        op: "system calls",
        series: &[user("user", "platform.syscall")],
        timeout_s: 300,
    },
    Benchmark {
        name: "cobj.counter",
        description: "clustered-object counter add(1) on every vCPU: one shared atomic vs per-CPU cells vs adaptive (swaps on contention)",
        cmdline: COBJ_CMDLINE,
        op: "add calls",
        series: &[
            user("shared", "cobj.counter.shared"),
            user("partitioned", "cobj.counter.partitioned"),
            user("adaptive", "cobj.counter.adaptive"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "cobj.pagemgr",
        description: "clustered-object page manager alloc+free on every vCPU: one locked list vs per-CPU caches vs adaptive",
        cmdline: COBJ_CMDLINE,
        op: "alloc+free pairs",
        series: &[
            user("shared", "cobj.pagemgr.shared"),
            user("distributed", "cobj.pagemgr.distributed"),
            user("adaptive", "cobj.pagemgr.adaptive"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "cobj.dhash",
        description: "clustered-object hash table lookups of shared keys (every 64th op an update) on every vCPU: locked table vs replicated vs adaptive",
        cmdline: COBJ_CMDLINE,
        op: "hash-table operations",
        series: &[
            user("shared", "cobj.dhash.shared"),
            user("distributed", "cobj.dhash.distributed"),
            user("adaptive", "cobj.dhash.adaptive"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "cobj.process",
        description: "clustered-object process region lookups (every 1024th op adds and removes a region) on every vCPU: locked list vs per-CPU caches vs adaptive",
        cmdline: COBJ_CMDLINE,
        op: "region lookups",
        series: &[
            user("shared", "cobj.process.shared"),
            user("replicated", "cobj.process.replicated"),
            user("adaptive", "cobj.process.adaptive"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "cobj.call",
        description: "what a clustered-object reference costs: add on a private counter by direct call vs through the reference, on every vCPU",
        cmdline: COBJ_CMDLINE,
        op: "counter adds",
        series: &[
            user("direct", "cobj.call.direct"),
            user("ref", "cobj.call.ref"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "proc.syscall",
        description: "null system calls from a process's threads, one kept on each vCPU (the process system-call path: #UD site, kernel dispatch, iretq)",
        cmdline: PROC_CMDLINE,
        op: "system calls",
        series: &[user("process", "proc.syscall")],
        timeout_s: 300,
    },
    Benchmark {
        name: "proc.fault",
        description: "first-touch anonymous page faults in one process, a thread per vCPU on its own pages of one region: shared vs replicated Process object (K42's Shared vs Distributed process object)",
        cmdline: PROC_CMDLINE,
        op: "page faults",
        series: &[
            user("shared", "proc.fault.shared"),
            user("replicated", "proc.fault.replicated"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "proc.forkwait",
        description: "fork + child exit + wait cycles by one process kept on each vCPU (copy-on-write address space, process table, scheduler)",
        cmdline: PROC_CMDLINE,
        op: "fork+exit+wait cycles",
        series: &[user("process", "proc.forkwait")],
        timeout_s: 300,
    },
    Benchmark {
        name: "ppc.call",
        description: "protected procedure calls (8-byte echo) from a client thread kept on each vCPU into one server process, each served on the caller's CPU",
        cmdline: PPC_CMDLINE,
        op: "PPC round trips",
        series: &[user("process", "ppc.call")],
        timeout_s: 300,
    },
    Benchmark {
        name: "fs.ops",
        description: "4 KiB reads of one shared 1 MiB file by a thread kept on each vCPU, through descriptors from the file server: the file's page index (its FCM) shared (one lock) vs distributed (K42's DHashTable) — the seed's Shared vs Distributed FCM figure",
        cmdline: FS_OPS_CMDLINE,
        op: "4 KiB reads",
        series: &[
            user("shared", "fs.ops.shared"),
            user("distributed", "fs.ops.distributed"),
        ],
        timeout_s: 300,
    },
    Benchmark {
        name: "fs.postmark",
        description: "Postmark 1.5 (files of 500-10,000 bytes, 512-byte blocks, equal biases; 100 files and 100 transactions, a fifth of its defaults), one instance per vCPU in its own directory, through the file server",
        cmdline: FS_POSTMARK_CMDLINE,
        op: "transactions",
        series: &[user("instance", "fs.postmark")],
        timeout_s: 600,
    },
    Benchmark {
        name: "trace.event3",
        description: "trace events logged from user mode on every vCPU at once, each into its own CPU's buffers: enabled three-word events vs disabled ones (one mask test)",
        cmdline: TRACE_CMDLINE,
        op: "events",
        series: &[
            user("enabled", "trace.event3"),
            user("disabled", "trace.disabled"),
        ],
        timeout_s: 300,
    },
];

/// Every suite, in the order `k42vmm bench list` shows them.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "nightly",
        description: "the nightly regression job (make nightly): every benchmark that scales over vCPUs",
        benchmarks: &[
            "platform.spin",
            "platform.syscall",
            "cobj.counter",
            "cobj.pagemgr",
            "cobj.dhash",
            "cobj.process",
            "cobj.call",
            "proc.syscall",
            "proc.fault",
            "proc.forkwait",
            "fs.ops",
            "trace.event3",
        ],
    },
    Suite {
        name: "platform",
        description: "what the host's virtualisation costs user programs, per vCPU count",
        benchmarks: &["platform.spin", "platform.syscall"],
    },
    Suite {
        name: "cobj",
        description: "K42's clustered objects: shared vs distributed vs adaptive implementations, and the cost of a reference",
        benchmarks: &[
            "cobj.counter",
            "cobj.pagemgr",
            "cobj.dhash",
            "cobj.process",
            "cobj.call",
        ],
    },
    Suite {
        name: "proc",
        description: "processes: system calls, page faults through the Process object (shared vs replicated), fork+exit+wait, per vCPU count",
        benchmarks: &["proc.syscall", "proc.fault", "proc.forkwait"],
    },
    Suite {
        name: "ppc",
        description: "protected procedure calls: round trips per vCPU count (each CPU calls its own worker of the server)",
        benchmarks: &["ppc.call"],
    },
    Suite {
        name: "fs",
        description: "the file server and its page cache: shared vs distributed FCM reads, Postmark transactions, per vCPU count",
        benchmarks: &["fs.ops", "fs.postmark"],
    },
    Suite {
        name: "trace",
        description: "what logging a trace event costs, per vCPU count (per-CPU buffers: it should scale linearly)",
        benchmarks: &["trace.event3"],
    },
];

/// The suite `k42vmm bench` runs when given neither `--suite` nor `--bench`.
pub const DEFAULT_SUITE: &str = "nightly";

/// The benchmark called `name`.
pub fn benchmark(name: &str) -> Option<&'static Benchmark> {
    BENCHMARKS.iter().find(|b| b.name == name)
}

/// The suite called `name`.
pub fn suite(name: &str) -> Option<&'static Suite> {
    SUITES.iter().find(|s| s.name == name)
}

/// The `k42vmm bench list` text: suites, then benchmarks with their series.
pub fn listing() -> String {
    let mut s = String::from("suites (k42vmm bench --suite NAME):\n");
    let w = SUITES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for suite in SUITES {
        let default = if suite.name == DEFAULT_SUITE {
            " [default]"
        } else {
            ""
        };
        s += &format!(
            "  {:<w$}  {}{default}\n  {:<w$}  benchmarks: {}\n",
            suite.name,
            suite.description,
            "",
            suite.benchmarks.join(", ")
        );
    }
    s += &format!(
        "  {:<w$}  {}\n  {:<w$}  its own driver: guest and host Linux in one run, no vCPU sweep (--quick: small sizes)\n",
        super::linux::SUITE,
        super::linux::DESCRIPTION,
        ""
    );
    s += "\nbenchmarks (k42vmm bench --bench NAME):\n";
    let w = BENCHMARKS.iter().map(|b| b.name.len()).max().unwrap_or(0);
    for b in BENCHMARKS {
        let series: Vec<String> = b
            .series
            .iter()
            .map(|x| format!("{} ({} {})", x.label, x.record, x.mode.name()))
            .collect();
        s += &format!(
            "  {:<w$}  {}\n  {:<w$}  series: {}; cmdline '{}'\n",
            b.name,
            b.description,
            "",
            series.join(", "),
            b.cmdline
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_suites_name_real_benchmarks() {
        let mut seen = HashSet::new();
        for b in BENCHMARKS {
            assert!(seen.insert(b.name), "benchmark {} twice", b.name);
            assert!(!b.series.is_empty(), "{} has no series", b.name);
            assert!(b.timeout_s > 0);
            let mut labels = HashSet::new();
            for s in b.series {
                assert!(
                    labels.insert(s.label),
                    "{}: series {} twice",
                    b.name,
                    s.label
                );
                assert!(
                    s.record.len() <= k42_abi::bench::MAX_BENCH_NAME,
                    "{}: record name {} is longer than the ABI allows",
                    b.name,
                    s.record
                );
            }
        }
        let mut seen = HashSet::new();
        for s in SUITES {
            assert!(seen.insert(s.name), "suite {} twice", s.name);
            assert!(!s.benchmarks.is_empty());
            for b in s.benchmarks {
                assert!(benchmark(b).is_some(), "suite {} names unknown {b}", s.name);
            }
        }
        assert!(suite(DEFAULT_SUITE).is_some());
    }

    #[test]
    fn listing_names_everything() {
        let text = listing();
        for s in SUITES {
            assert!(text.contains(s.name) && text.contains(s.description));
        }
        for b in BENCHMARKS {
            assert!(text.contains(b.name) && text.contains(b.description));
        }
    }
}
