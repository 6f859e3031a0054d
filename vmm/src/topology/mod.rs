//! Topology-aware placement: discover the host's CPUs and NUMA nodes, make
//! a plan that puts every vCPU on a known host CPU and every guest node's
//! memory on a known host node, and apply it.
//!
//! | module      | what it does                                            |
//! |-------------|---------------------------------------------------------|
//! | [`sysfs`]   | host topology from sysfs below a root (tests use fakes) |
//! | [`spec`]    | `--pin` and `--numa` value syntax                       |
//! | [`plan`]    | the placement plan and the guest's topology record      |
//! | [`pin`]     | sched_setaffinity with read-back, mbind, prefault        |
//! | [`cpulist`] | the `0-3,8-11` list syntax                              |
//!
//! `k42vmm run` plans before it maps guest RAM, binds each guest node's
//! RAM, and each vCPU thread pins itself before it creates its vCPU.
//! `k42vmm topology` prints the same plan without booting.

pub mod cpulist;
pub mod pin;
pub mod plan;
pub mod spec;
pub mod sysfs;

use std::path::Path;

pub use plan::{PlacementRequest, Plan, PlanError};
pub use spec::{NumaPolicy, PinPolicy};
pub use sysfs::HostTopology;

/// Why no plan could be made for this host.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Sysfs(#[from] sysfs::SysfsError),
    #[error("cannot read this process's CPU affinity: {0}")]
    Affinity(std::io::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl TopologyError {
    /// Exit status: 2 when the user's options are at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            TopologyError::Plan(_) => 2,
            _ => 1,
        }
    }
}

/// Read the host below `sysfs_root` and plan `req` on it. On the real
/// host (`/`) the usable CPUs are those in this thread's affinity mask;
/// for another tree, all its online CPUs.
pub fn plan_for_host(
    sysfs_root: &Path,
    req: &PlacementRequest,
) -> Result<(HostTopology, Plan), TopologyError> {
    let host = HostTopology::discover(sysfs_root)?;
    let allowed = if sysfs_root == Path::new("/") {
        pin::current_affinity().map_err(TopologyError::Affinity)?
    } else {
        host.online_ids()
    };
    let plan = plan::plan(&host, &allowed, req)?;
    Ok((host, plan))
}
