//! Boot info as the kernel sees it is consistent.

use k42_abi::MemRegionKind;

use crate::ktest::TestResult;
use crate::{boot, check, kernel_test, smp, time};

fn boot_info_is_consistent() -> TestResult {
    let bi = boot::boot_info();
    check!(
        bi.vcpus == smp::ncpus(),
        "boot info says {} vCPUs, the kernel counts {}",
        bi.vcpus,
        smp::ncpus()
    );
    check!(time::tsc_khz() > 0, "no TSC frequency");
    let mut end = 0;
    let mut usable = 0;
    for r in bi.regions() {
        check!(
            r.start >= end,
            "memory region {:#x} overlaps the one before it",
            r.start
        );
        check!(
            r.start % 4096 == 0 && r.len % 4096 == 0,
            "memory region {:#x}+{:#x} is not page-aligned",
            r.start,
            r.len
        );
        check!(
            MemRegionKind::from_raw(r.kind).is_some(),
            "memory region {:#x} has unknown kind {}",
            r.start,
            r.kind
        );
        if r.kind == MemRegionKind::Usable as u32 {
            usable += r.len;
        }
        end = r.start + r.len;
    }
    check!(
        usable > 0 && usable <= bi.mem_size,
        "usable memory {usable} of {} is impossible",
        bi.mem_size
    );
    check!(bi.kernel_start < bi.kernel_end, "empty kernel range");
    check!(bi.cmdline().is_some(), "command line is not UTF-8");
    Ok(())
}
kernel_test!("boot.info", boot_info_is_consistent);
