//! The KVM VM: opening `/dev/kvm`, creating the VM with its in-kernel
//! irqchip, and registering guest RAM as memory slots. Everything here
//! happens once, before the first vCPU is created.

use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};

use crate::error::VmmError;
use crate::memory::GuestRam;

/// Identity-map and TSS pages that KVM needs for real-mode emulation on
/// Intel hosts; placed in the MMIO hole, away from RAM.
const KVM_IDENTITY_MAP: u64 = 0xfeff_c000;
const KVM_TSS: usize = 0xfeff_d000;

/// An open KVM and a VM with its irqchip and memory.
pub struct KvmVm {
    pub kvm: Kvm,
    pub fd: Arc<VmFd>,
    /// CPUID that KVM supports, the template for every vCPU.
    pub supported_cpuid: CpuId,
    /// Most vCPUs this KVM allows in one VM.
    pub max_vcpus: u32,
}

/// Open `/dev/kvm`, with a message that says KVM is required when it is
/// missing or not usable.
pub fn open() -> Result<Kvm, VmmError> {
    let kvm = Kvm::new().map_err(|e| VmmError::KvmUnavailable(e.to_string()))?;
    if kvm.get_api_version() != 12 {
        return Err(VmmError::KvmUnavailable(format!(
            "KVM API version {} (need 12)",
            kvm.get_api_version()
        )));
    }
    Ok(kvm)
}

impl KvmVm {
    /// Create the VM: irqchip first (before any vCPU), then memory slots.
    pub fn create(kvm: Kvm, ram: &GuestRam) -> Result<Self, VmmError> {
        let fd = kvm
            .create_vm()
            .map_err(|e| VmmError::Kvm("KVM_CREATE_VM", e))?;
        // Intel needs these pages even though this guest never leaves
        // long mode; other KVM flavours may refuse them, which is fine.
        let _ = fd.set_identity_map_address(KVM_IDENTITY_MAP);
        let _ = fd.set_tss_address(KVM_TSS);
        fd.create_irq_chip()
            .map_err(|e| VmmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
        for (slot, (gpa, len, host)) in ram.host_mappings().into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mapping of `len` bytes
            // owned by `ram`, which the caller keeps alive for as long as
            // the VM exists (vm::run drops the VM before the RAM).
            unsafe { fd.set_user_memory_region(region) }
                .map_err(|e| VmmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let max_vcpus = kvm.get_max_vcpus() as u32;
        Ok(Self {
            kvm,
            fd: Arc::new(fd),
            supported_cpuid,
            max_vcpus,
        })
    }
}
