//! Errors that stop k42vmm before or while it boots a guest. Each message
//! names the thing at fault; the CLI prints it on one line and exits 2
//! (bad input) or 1 (host failure).

use std::path::PathBuf;

/// Why k42vmm could not boot or run a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Image(#[from] k42_image::ImageError),
    #[error(
        "--memory {have_mib} MiB is too small for image {image}: it needs at least {need_mib} MiB ({why})"
    )]
    MemoryTooSmall {
        image: PathBuf,
        have_mib: u64,
        need_mib: u64,
        why: String,
    },
    #[error("--memory {0}: more than the {1} GiB k42vmm supports")]
    MemoryTooLarge(String, u64),
    #[error("--vcpus 0: a VM needs at least one vCPU")]
    TooFewVcpus,
    #[error("--memory {}: guest RAM must be a non-zero multiple of 2 MiB", fmt_bytes(*.0))]
    MemoryNotAligned(u64),
    #[error("--vcpus {requested}: more than the {limit} vCPUs {why}")]
    TooManyVcpus {
        requested: u32,
        limit: u32,
        why: &'static str,
    },
    #[error("the kernel command line is {0} bytes, over the limit of {1}")]
    CmdlineTooLong(usize, usize),
    /// A run option that cannot work, said in full.
    #[error("{0}")]
    Config(String),
    #[error(
        "image {image}: kernel segment at {addr:#x} lies outside the kernel area {start:#x}..{end:#x}"
    )]
    KernelLayout {
        image: PathBuf,
        addr: u64,
        start: u64,
        end: u64,
    },
    #[error("KVM is required but /dev/kvm is not usable: {0}")]
    KvmUnavailable(String),
    #[error("KVM call {0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("cannot set up guest memory: {0}")]
    Memory(String),
    #[error("cannot load the kernel: {0}")]
    Load(String),
    #[error("cannot write report {0}: {1}")]
    Report(PathBuf, std::io::Error),
    #[error(
        "{nodes} guest nodes and {modules} boot modules need {regions} boot memory regions, over the ABI limit of {limit}; use fewer guest nodes (--numa)"
    )]
    TooManyRegions {
        nodes: usize,
        modules: usize,
        regions: usize,
        limit: usize,
    },
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error("cannot bind guest node {node}'s memory to host node {host_node}: {err}")]
    Bind {
        node: u32,
        host_node: u32,
        err: std::io::Error,
    },
    #[error("--prefault: cannot fault in guest memory: {0}")]
    Prefault(std::io::Error),
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error("{0}")]
    Host(String),
}

impl VmmError {
    /// Exit status for this error: 2 when the user's input is at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            VmmError::Image(_)
            | VmmError::MemoryTooSmall { .. }
            | VmmError::MemoryTooLarge(..)
            | VmmError::TooManyVcpus { .. }
            | VmmError::TooFewVcpus
            | VmmError::MemoryNotAligned(_)
            | VmmError::CmdlineTooLong(..)
            | VmmError::Config(_)
            | VmmError::KernelLayout { .. }
            | VmmError::TooManyRegions { .. } => 2,
            VmmError::Topology(e) => e.exit_code(),
            VmmError::Trace(e) => e.exit_code(),
            _ => 1,
        }
    }
}

fn fmt_bytes(b: u64) -> String {
    if b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else if b.is_multiple_of(1024) {
        format!("{}K", b >> 10)
    } else {
        format!("{b} bytes")
    }
}
