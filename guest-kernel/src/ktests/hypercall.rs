//! k42vmm answers malformed hypercalls with error codes and keeps running.

use k42_abi::hypercall::{
    AlignedBlock, BLOCK_ALIGN, BLOCK_SHIFT, HypercallBlock, HypercallNr, HypercallResult,
    MAX_CONSOLE_WRITE,
};
use k42_abi::layout::{HIGH_RAM_BASE, LOW_RAM_END};

use crate::arch::x86_64::hypercall::{send, send_at, send_value};
use crate::ktest::TestResult;
use crate::{arch, boot, check, kernel_test};

fn call(nr: u32, reserved: u32, args: [u64; 4]) -> i64 {
    send(&mut AlignedBlock(HypercallBlock {
        reserved,
        ..HypercallBlock::new(nr, args)
    }))
}

/// A guest-physical address 1 MiB past the end of RAM (from the memory
/// map: with more than 3 GiB, RAM goes on above 4 GiB, past `mem_size`).
fn outside_ram() -> u64 {
    boot::boot_info().ram_end() + (1 << 20)
}

fn bad_hypercalls_get_error_codes() -> TestResult {
    use HypercallResult::{BadAddress, InvalidArgument, NoSuchCall, NotPermitted, TooLong};
    let text = "x";
    let text_pa = arch::virt_to_phys(text.as_ptr() as u64).unwrap();
    let cases: [(&str, i64, HypercallResult); 12] = [
        (
            "console stream neither stdout nor stderr",
            call(HypercallNr::ConsoleWrite as u32, 0, [text_pa, 1, 2, 0]),
            InvalidArgument,
        ),
        ("unknown number", call(0, 0, [0; 4]), NoSuchCall),
        (
            "no such syscall path",
            call(HypercallNr::LinuxSyscallPath as u32, 0, [7, 0, 0, 0]),
            InvalidArgument,
        ),
        ("number past the last", call(999, 0, [0; 4]), NoSuchCall),
        (
            "reserved field set",
            call(HypercallNr::ConsoleWrite as u32, 1, [text_pa, 1, 0, 0]),
            InvalidArgument,
        ),
        (
            "console text outside RAM",
            call(
                HypercallNr::ConsoleWrite as u32,
                0,
                [outside_ram(), 1, 0, 0],
            ),
            BadAddress,
        ),
        (
            "console text in the MMIO hole",
            call(HypercallNr::ConsoleWrite as u32, 0, [LOW_RAM_END, 1, 0, 0]),
            BadAddress,
        ),
        (
            "console text over the limit",
            call(
                HypercallNr::ConsoleWrite as u32,
                0,
                [text_pa, MAX_CONSOLE_WRITE + 1, 0, 0],
            ),
            TooLong,
        ),
        (
            "boot info with a wrong length",
            call(HypercallNr::BootInfo as u32, 0, [text_pa, 8, 0, 0]),
            InvalidArgument,
        ),
        (
            "online for another CPU",
            call(HypercallNr::CpuOnline as u32, 0, [1000, 0, 0, 0]),
            InvalidArgument,
        ),
        (
            "StartAps twice",
            call(HypercallNr::StartAps as u32, 0, [0; 4]),
            NotPermitted,
        ),
        (
            "shutdown code over 255",
            call(HypercallNr::Shutdown as u32, 0, [256, 0, 0, 0]),
            InvalidArgument,
        ),
    ];
    for (what, got, want) in cases {
        check!(
            got == want as i64,
            "{what}: k42vmm answered {got}, expected {want:?} ({})",
            want as i64
        );
    }
    // Port values naming no block in RAM: k42vmm puts the error in rax.
    let mut dummy = AlignedBlock::default();
    let value = |pa: u64| (pa >> BLOCK_SHIFT) as u32;
    let blocks = [
        ("past the end of RAM", value(outside_ram())),
        ("at the end of RAM", value(boot::boot_info().ram_end())),
        ("at the start of the MMIO hole", value(LOW_RAM_END)),
        (
            "at the end of the MMIO hole",
            value(HIGH_RAM_BASE - BLOCK_ALIGN),
        ),
        ("at the highest port value", u32::MAX),
    ];
    for (what, v) in blocks {
        let r = send_value(v, &mut dummy.0);
        check!(r == BadAddress as i64, "a block {what} ({v:#x}) got {r}");
    }
    // Addresses no port value names never reach k42vmm.
    for pa in [0x1004, 0x1040, 1 << 39] {
        let r = send_at(pa, &mut dummy.0);
        check!(r == BadAddress as i64, "a block at {pa:#x} got {r}");
    }
    // And a good call still works afterwards.
    let r = call(HypercallNr::ConsoleWrite as u32, 0, [text_pa, 0, 0, 0]);
    check!(r == 0, "an empty console write got {r}");
    Ok(())
}
kernel_test!("hypercall.errors", bad_hypercalls_get_error_codes);

/// `ZeroPages` clears the frames listed, and refuses a bad list whole:
/// a frame of it that was fine stays untouched.
fn zero_pages_checks_every_frame_first() -> TestResult {
    use HypercallResult::{BadAddress, InvalidArgument, TooLong};
    let outside_ram = outside_ram();
    let Some(frame) = crate::mm::pages::alloc_zeroed() else {
        return Err("no frame for the test".into());
    };
    let page = arch::phys_to_virt(frame) as *mut u64;
    let mark = |v: u64| {
        // SAFETY: the frame is this test's, in the direct map.
        unsafe { (page.write_volatile(v), page.add(511).write_volatile(v)) };
    };
    // SAFETY: as above.
    let read = || unsafe { (page.read_volatile(), page.add(511).read_volatile()) };
    mark(0x5a5a);
    let zp = HypercallNr::ZeroPages as u32;
    // The lists are read by k42vmm through their physical addresses:
    // black_box keeps them in memory as written.
    let pa_of =
        |l: &[u64; 2]| arch::virt_to_phys(core::hint::black_box(l).as_ptr() as u64).unwrap();
    let with_outside = [frame, outside_ram];
    let in_hole = [frame, LOW_RAM_END];
    let with_unaligned = [frame, frame + 8];
    let outside = call(zp, 0, [pa_of(&with_outside), 2, 0, 0]);
    let hole = call(zp, 0, [pa_of(&in_hole), 2, 0, 0]);
    let unaligned = call(zp, 0, [pa_of(&with_unaligned), 2, 0, 0]);
    let too_many = call(
        zp,
        0,
        [
            pa_of(&with_outside),
            k42_abi::hypercall::MAX_ZERO_PAGES + 1,
            0,
            0,
        ],
    );
    let bad_list = call(zp, 0, [outside_ram, 1, 0, 0]);
    let kept = read();
    let good = call(zp, 0, [pa_of(&with_outside), 1, 0, 0]);
    let cleared = read();
    crate::mm::pages::free(frame);
    check!(
        outside == BadAddress as i64,
        "a frame outside RAM got {outside}"
    );
    check!(
        hole == BadAddress as i64,
        "a frame in the MMIO hole got {hole}"
    );
    check!(
        unaligned == InvalidArgument as i64,
        "an unaligned frame got {unaligned}"
    );
    check!(too_many == TooLong as i64, "too many frames got {too_many}");
    check!(
        bad_list == BadAddress as i64,
        "a list outside RAM got {bad_list}"
    );
    check!(
        kept == (0x5a5a, 0x5a5a),
        "a refused call changed the frame: {kept:?}"
    );
    check!(good == 1, "a good call got {good}");
    check!(cleared == (0, 0), "the frame was not cleared: {cleared:?}");
    Ok(())
}
kernel_test!("hypercall.zero_pages", zero_pages_checks_every_frame_first);

/// `CopyMem` copies the segments listed, and refuses a bad list whole: a
/// segment of it that was fine copies nothing.
fn copy_mem_checks_every_segment_first() -> TestResult {
    use HypercallResult::{BadAddress, TooLong};
    let outside_ram = outside_ram();
    let (Some(a), Some(b)) = (
        crate::mm::pages::alloc_zeroed(),
        crate::mm::pages::alloc_zeroed(),
    ) else {
        return Err("no frames for the test".into());
    };
    let (pa, pb) = (
        arch::phys_to_virt(a) as *mut u64,
        arch::phys_to_virt(b) as *mut u64,
    );
    // SAFETY: both frames are this test's, in the direct map.
    unsafe {
        (
            pa.write_volatile(0x1234_5678),
            pa.add(100).write_volatile(0x9abc),
        )
    };
    // SAFETY: as above.
    let read_b = || unsafe { (pb.read_volatile(), pb.add(100).read_volatile()) };
    let cm = HypercallNr::CopyMem as u32;
    let pa_of =
        |l: &[[u64; 3]; 2]| arch::virt_to_phys(core::hint::black_box(l).as_ptr() as u64).unwrap();
    let good = [[b, a, 8], [b + 800, a + 800, 8]];
    let with_outside = [[b, a, 8], [outside_ram, a, 8]];
    let from_hole = [[b, a, 8], [b, LOW_RAM_END, 8]];
    let with_long = [[b, a, 8], [b, a, 4097]];
    let outside = call(cm, 0, [pa_of(&with_outside), 2, 0, 0]);
    let hole = call(cm, 0, [pa_of(&from_hole), 2, 0, 0]);
    let long = call(cm, 0, [pa_of(&with_long), 2, 0, 0]);
    let too_many = call(
        cm,
        0,
        [
            pa_of(&good),
            k42_abi::hypercall::MAX_COPY_SEGMENTS + 1,
            0,
            0,
        ],
    );
    let bad_list = call(cm, 0, [outside_ram, 1, 0, 0]);
    let kept = read_b();
    let copied = call(cm, 0, [pa_of(&good), 2, 0, 0]);
    let after = read_b();
    crate::mm::pages::free(a);
    crate::mm::pages::free(b);
    check!(
        outside == BadAddress as i64,
        "a range outside RAM got {outside}"
    );
    check!(
        hole == BadAddress as i64,
        "a range in the MMIO hole got {hole}"
    );
    check!(long == TooLong as i64, "a segment over a page got {long}");
    check!(
        too_many == TooLong as i64,
        "too many segments got {too_many}"
    );
    check!(
        bad_list == BadAddress as i64,
        "a list outside RAM got {bad_list}"
    );
    check!(kept == (0, 0), "a refused call copied: {kept:?}");
    check!(copied == 16, "a good call got {copied}");
    check!(after == (0x1234_5678, 0x9abc), "not copied: {after:?}");
    Ok(())
}
kernel_test!("hypercall.copy_mem", copy_mem_checks_every_segment_first);

/// A block above 4 GiB, where a 32-bit physical address would have been
/// truncated, is the block k42vmm answers in. Checks nothing when no node
/// hands out a frame there (no RAM above 4 GiB, or a single node whose
/// frames come from below first: `--memory 16G --numa 2` has one).
fn block_above_4gib_is_reached() -> TestResult {
    use crate::mm::frame;
    let mut found = None;
    for node in 0..crate::topology::get().nodes {
        let Some(pa) = frame::alloc_on_node(node) else {
            continue;
        };
        if pa >= HIGH_RAM_BASE {
            found = Some(pa);
            break;
        }
        frame::free(pa);
    }
    let Some(frame_pa) = found else {
        return Ok(());
    };
    let pa = frame_pa + 3 * BLOCK_ALIGN;
    let block = arch::phys_to_virt(pa) as *mut HypercallBlock;
    let answer = |reserved: u32| {
        // SAFETY: the frame is this test's, in the direct map, and `pa`
        // is block-aligned inside it.
        unsafe {
            block.write_volatile(HypercallBlock {
                reserved,
                result: 0x5555,
                ..HypercallBlock::new(HypercallNr::Nop as u32, [0; 4])
            })
        };
        send_at(pa, block)
    };
    let nop = answer(0);
    let reserved = answer(1);
    frame::free(frame_pa);
    check!(nop == 0, "a Nop in a block at {pa:#x} got {nop}");
    check!(
        reserved == HypercallResult::InvalidArgument as i64,
        "a block at {pa:#x} with its reserved field set got {reserved}"
    );
    Ok(())
}
kernel_test!("hypercall.high_block", block_above_4gib_is_reached);
