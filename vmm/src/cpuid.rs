//! Per-vCPU CPUID: KVM's supported set, normalised so that each vCPU sees
//! its own APIC id, x2APIC, TSC-deadline and the hypervisor bit, and a flat
//! topology of `vcpus` single-thread cores in one package.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Topology level types for leaves 0xB and 0x1F.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of the x2APIC id that select a core within the package.
fn core_bits(vcpus: u32) -> u32 {
    32 - (vcpus.max(1) - 1).leading_zeros()
}

/// The CPUID for vCPU `index` of a VM with `vcpus` vCPUs.
pub fn for_vcpu(supported: &CpuId, index: u32, vcpus: u32) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = index;
    for e in cpuid.as_mut_slice().iter_mut() {
        normalise(e, apic_id, vcpus);
    }
    cpuid
}

fn normalise(e: &mut kvm_cpuid_entry2, apic_id: u32, vcpus: u32) {
    match e.function {
        1 => {
            e.ebx = (e.ebx & 0x0000_ffff) | (vcpus.min(255) << 16) | ((apic_id & 0xff) << 24);
            e.ecx |= LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE | LEAF1_ECX_HYPERVISOR;
            e.edx |= LEAF1_EDX_HTT;
        }
        0xb | 0x1f => {
            let (eax, ebx, ecx) = match e.index {
                0 => (0, 1, LEVEL_SMT << 8),
                1 => (core_bits(vcpus), vcpus, (LEVEL_CORE << 8) | 1),
                n => (0, 0, n & 0xff),
            };
            e.eax = eax;
            e.ebx = ebx;
            e.ecx = ecx;
            e.edx = apic_id;
        }
        4 => {
            // Cores per package (minus one) in EAX[31:26]; one thread per cache.
            let cores = vcpus.min(64) - 1;
            e.eax = (e.eax & 0x03ff_c3ff) | (cores << 26);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_bits_cover_all_ids() {
        assert_eq!(core_bits(1), 0);
        assert_eq!(core_bits(2), 1);
        assert_eq!(core_bits(3), 2);
        assert_eq!(core_bits(64), 6);
        assert_eq!(core_bits(255), 8);
    }

    #[test]
    fn leaf1_and_0xb_carry_the_apic_id() {
        let mut l1 = kvm_cpuid_entry2 {
            function: 1,
            ..Default::default()
        };
        normalise(&mut l1, 7, 8);
        assert_eq!(l1.ebx >> 24, 7);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        let mut lb = kvm_cpuid_entry2 {
            function: 0xb,
            index: 1,
            ..Default::default()
        };
        normalise(&mut lb, 200, 255);
        assert_eq!(lb.edx, 200);
        assert_eq!(lb.ebx, 255);
        assert_eq!(lb.eax, 8);
    }
}
