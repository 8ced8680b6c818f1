//! The seeds' pitfalls, one test each, on the simulated OS in Apple-rules mode: each one
//! asserts the error the simulator raises where a Mac would crash or refuse.

use codeheap_virtual_alloc::sim::{Fault, FaultKind, SimOs, SimRules};
use codeheap_virtual_alloc::{
    Access, Error, Os, PageState, Protection, RegionInfo, SysCall, ThreadMode, VirtualAlloc, Word,
    WriteScope, WxStrategy, current_mode, enter_permanent_write_mode, with_write_mode,
};

const PAGE: usize = 16 * 1024;

fn apple() -> VirtualAlloc<SimOs> {
    let alloc = VirtualAlloc::new(SimOs::apple());
    assert_eq!(
        alloc.strategy(),
        WxStrategy::MapJit,
        "MAP_JIT is the Apple default"
    );
    alloc
}

/// A committed MAP_JIT page holding `return value` at its base, flushed.
fn region_with_code<O: Os>(alloc: &VirtualAlloc<O>, value: u32) -> RegionInfo {
    let region = alloc
        .reserve_and_commit(PAGE, Protection::ExecuteRead)
        .unwrap();
    let code = alloc.arch().encode_return_u32(value);
    with_write_mode(|| alloc.write(region.base, code.as_bytes())).unwrap();
    alloc
        .flush_instruction_cache(region.base, code.as_bytes().len())
        .unwrap();
    region
}

/// "Runs" the code at `addr` on the simulated CPU (every allocator here is on a `SimOs`).
fn run<O: Os>(alloc: &VirtualAlloc<O>, addr: usize) -> Result<u32, Error> {
    // SAFETY: the simulator decodes the code; it touches no process memory.
    unsafe { alloc.call(addr) }
}

fn fault(addr: usize, kind: FaultKind) -> Error {
    Error::Fault(Fault { addr, kind })
}

#[test]
fn code_runs_when_every_rule_is_followed() {
    let alloc = apple();
    let region = region_with_code(&alloc, 0xBEEF_0042);
    assert_eq!(run(&alloc, region.base), Ok(0xBEEF_0042));
    assert!(alloc.os().is_map_jit(region.base));
}

/// Pitfall 2: mprotect on MAP_JIT pages fails, so protect calls must not make it.
#[test]
fn mprotect_on_a_map_jit_page_fails_and_protect_calls_skip_it() {
    let alloc = apple();
    let region = region_with_code(&alloc, 1);
    // SAFETY: the simulator touches no process memory.
    let raw = unsafe { alloc.os().protect(region.base, PAGE, Protection::ReadWrite) };
    assert_eq!(
        raw,
        Err(Error::Os {
            call: SysCall::Mprotect,
            errno: libc::EPERM
        })
    );

    let before = alloc.os().syscalls();
    let old = alloc
        .protect(region.base, PAGE, Protection::ReadWrite)
        .unwrap();
    alloc
        .protect_expecting(
            region.base,
            PAGE,
            Protection::ExecuteRead,
            Protection::ReadWrite,
        )
        .unwrap();
    assert_eq!(old, Protection::ExecuteRead);
    assert_eq!(
        alloc.os().syscalls().since(&before).total(),
        0,
        "no system call at all"
    );
    assert_eq!(alloc.stats().protect_skipped, 2);
    assert_eq!(alloc.stats().protect_syscalls, 0);
}

/// Pitfall 5: a thread in write mode cannot run MAP_JIT code.
#[test]
fn executing_in_write_mode_faults() {
    let alloc = apple();
    let region = region_with_code(&alloc, 5);
    let _write = WriteScope::enter();
    // SAFETY: the simulator decodes the code; it touches no process memory.
    let raw = unsafe { alloc.os().call(region.base) };
    assert_eq!(raw, Err(fault(region.base, FaultKind::ExecuteInWriteMode)));
    assert_eq!(
        alloc.entry_point(region.base),
        Err(Error::WrongThreadMode {
            required: ThreadMode::Execute,
            current: ThreadMode::Write
        })
    );
}

/// The other half of per-thread W^X: a thread in execute mode cannot write MAP_JIT pages.
#[test]
fn writing_in_execute_mode_faults() {
    let alloc = apple();
    let region = alloc
        .reserve_and_commit(PAGE, Protection::ExecuteRead)
        .unwrap();
    assert_eq!(current_mode(), ThreadMode::Execute);
    // SAFETY: the simulator touches no process memory.
    let raw = unsafe { alloc.os().write(region.base + 8, &[1, 2, 3]) };
    assert_eq!(
        raw,
        Err(fault(region.base + 8, FaultKind::WriteInExecuteMode))
    );
    assert_eq!(
        alloc.write(region.base + 8, &[1, 2, 3]),
        Err(Error::WrongThreadMode {
            required: ThreadMode::Write,
            current: ThreadMode::Execute
        })
    );
    let mut back = [9u8; 3];
    alloc.read(region.base + 8, &mut back).unwrap();
    assert_eq!(back, [0, 0, 0], "the refused write changed nothing");
}

/// Pitfall 3: code written since the last icache flush is stale.
#[test]
fn running_unflushed_code_is_reported_stale() {
    let alloc = apple();
    let region = alloc
        .reserve_and_commit(PAGE, Protection::ExecuteRead)
        .unwrap();
    let code = alloc.arch().encode_return_u32(3);
    with_write_mode(|| alloc.write(region.base, code.as_bytes())).unwrap();
    assert_eq!(
        run(&alloc, region.base),
        Err(fault(region.base, FaultKind::StaleInstruction))
    );
    alloc
        .flush_instruction_cache(region.base, code.as_bytes().len())
        .unwrap();
    assert_eq!(run(&alloc, region.base), Ok(3));

    // Patching makes the line stale again until the next flush.
    let patch = alloc.arch().encode_return_u32(4);
    with_write_mode(|| alloc.write(region.base, patch.as_bytes())).unwrap();
    assert!(matches!(
        run(&alloc, region.base),
        Err(Error::Fault(Fault {
            kind: FaultKind::StaleInstruction,
            ..
        }))
    ));
}

/// A patch made with one store needs write mode and alignment to its width, as a write
/// does; until the flush the icache still holds the old instruction, which keeps running
/// (no fault: a thread may be running the line while it is patched).
#[test]
fn a_store_needs_write_mode_alignment_and_a_flush() {
    let alloc = apple();
    let region = region_with_code(&alloc, 21);
    let patch = alloc.arch().encode_return_u32(22);
    let movz = Word::from_bytes(&patch.as_bytes()[..4]).expect("one instruction word");
    assert_eq!(
        alloc.store(region.base, movz),
        Err(Error::WrongThreadMode {
            required: ThreadMode::Write,
            current: ThreadMode::Execute,
        })
    );
    assert_eq!(
        with_write_mode(|| alloc.store(region.base + 2, movz)),
        Err(Error::Unaligned {
            addr: region.base + 2,
            align: 4
        })
    );
    assert_eq!(
        run(&alloc, region.base),
        Ok(21),
        "refused stores change nothing"
    );
    with_write_mode(|| alloc.store(region.base, movz)).unwrap();
    assert_eq!(run(&alloc, region.base), Ok(21), "the icache's copy runs");
    let mut stored = [0; 4];
    alloc.read(region.base, &mut stored).unwrap();
    assert_eq!(&stored, &patch.as_bytes()[..4], "memory holds the new word");
    alloc.flush_instruction_cache(region.base, 4).unwrap();
    assert_eq!(run(&alloc, region.base), Ok(22));
    // A plain write to a held line makes it stale: its bytes may be half written.
    with_write_mode(|| {
        alloc.store(
            region.base,
            Word::from_bytes(&patch.as_bytes()[..4]).unwrap(),
        )
    })
    .unwrap();
    with_write_mode(|| alloc.write(region.base + 4, &patch.as_bytes()[4..8])).unwrap();
    assert_eq!(
        run(&alloc, region.base),
        Err(fault(region.base, FaultKind::StaleInstruction))
    );
}

#[test]
fn a_write_elsewhere_on_the_page_does_not_stale_other_lines() {
    let alloc = apple();
    let region = region_with_code(&alloc, 11);
    // A background compiler writes another function two cache lines further on.
    let other = alloc.arch().encode_return_u32(12);
    with_write_mode(|| alloc.write(region.base + 128, other.as_bytes())).unwrap();
    assert_eq!(
        run(&alloc, region.base),
        Ok(11),
        "its own lines were flushed"
    );
}

fn fails_halfway(alloc: &VirtualAlloc<SimOs>, base: usize) -> Result<(), Error> {
    let _write = WriteScope::enter();
    alloc.write(base, &[0xAA])?;
    alloc.write(base + PAGE, &[0xBB])?; // past the committed page: `?` returns early
    Ok(())
}

/// Pitfall 4: an early return must not leave the thread in write mode.
#[test]
fn question_mark_early_return_restores_execute_mode() {
    let alloc = apple();
    let region = alloc.reserve(2 * PAGE).unwrap();
    alloc
        .commit(region.base, PAGE, Protection::ExecuteRead)
        .unwrap();
    let err = fails_halfway(&alloc, region.base).unwrap_err();
    assert_eq!(
        err,
        Error::NotCommitted {
            addr: region.base + PAGE
        }
    );
    assert_eq!(current_mode(), ThreadMode::Execute);
}

/// Pitfall 4, with a panic instead of an error.
#[test]
fn panic_inside_a_write_scope_restores_execute_mode() {
    let alloc = apple();
    let region = region_with_code(&alloc, 21);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _write = WriteScope::enter();
        assert_eq!(current_mode(), ThreadMode::Write);
        panic!("code generator bug");
    }));
    assert!(outcome.is_err());
    assert_eq!(current_mode(), ThreadMode::Execute);
    assert_eq!(
        run(&alloc, region.base),
        Ok(21),
        "the thread can run code again"
    );
}

/// Pitfall 5 for the background compiler: permanent write mode is refused code to run.
#[test]
fn a_thread_in_permanent_write_mode_is_refused_code() {
    let alloc = apple();
    let region = region_with_code(&alloc, 31);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_permanent_write_mode();
                {
                    let _nested = WriteScope::enter();
                }
                assert_eq!(current_mode(), ThreadMode::Write, "scopes do not end it");
                assert_eq!(
                    alloc.entry_point(region.base),
                    Err(Error::WrongThreadMode {
                        required: ThreadMode::Execute,
                        current: ThreadMode::Write
                    })
                );
                // It writes without any scope of its own.
                alloc.write(region.base + 64, &[0xCC]).unwrap();
            })
            .join()
            .unwrap();
    });
    // The main thread was never switched.
    assert_eq!(run(&alloc, region.base), Ok(31));
}

/// Pitfall 7: 16 KiB pages, and Windows' 64 KiB granularity (MAP_JIT reservations are carved
/// at it from the process's one region).
#[test]
fn sixteen_kib_pages_are_honoured() {
    let alloc = apple();
    assert_eq!(alloc.page_size(), PAGE);
    assert_eq!(alloc.allocation_granularity(), 64 * 1024);
    let region = alloc.reserve(1).unwrap();
    assert_eq!(region.size, PAGE, "rounded up to one 16 KiB page");
    assert_eq!(region.base % (64 * 1024), 0);
    for outside in [region.base - PAGE, region.end()] {
        assert_eq!(
            alloc.region(outside),
            None,
            "{outside:#x} is not the region's"
        );
        assert!(!alloc.is_jit_address(outside));
    }

    assert_eq!(
        alloc.commit(region.base + 4096, 4096, Protection::ExecuteRead),
        Err(Error::Unaligned {
            addr: region.base + 4096,
            align: PAGE
        })
    );
    let two = alloc.reserve(2 * PAGE).unwrap();
    alloc.commit(two.base, 1, Protection::ExecuteRead).unwrap();
    let info = alloc.query(two.base + 100).unwrap();
    assert_eq!(
        (info.base, info.size),
        (two.base, PAGE),
        "one byte commits one whole page"
    );
    assert_eq!(info.state, PageState::Committed(Protection::ExecuteRead));
    assert_eq!(
        alloc.query(two.base + PAGE).unwrap().state,
        PageState::Reserved
    );
}

/// Pitfall 6 (and 1): no entitlement, no MAP_JIT, and nothing left behind.
#[test]
fn map_jit_without_the_entitlement_fails() {
    let alloc = VirtualAlloc::new(SimOs::new(SimRules::apple().without_entitlement()));
    assert_eq!(alloc.strategy(), WxStrategy::MapJit, "no silent fallback");
    assert_eq!(
        alloc.reserve(PAGE),
        Err(Error::MapJitRefused { errno: libc::EPERM })
    );
    assert_eq!(alloc.os().mapped_pages(), 0);
    assert_eq!(alloc.stats().regions, 0);
}

/// The hardened runtime allows no executable memory but MAP_JIT: `Protect` cannot work.
#[test]
fn the_hardened_runtime_refuses_executable_mprotect() {
    let alloc = VirtualAlloc::with_strategy(SimOs::apple(), WxStrategy::Protect).unwrap();
    let region = alloc.reserve(PAGE).unwrap();
    assert_eq!(
        alloc.commit(region.base, PAGE, Protection::ExecuteRead),
        Err(Error::Os {
            call: SysCall::Mprotect,
            errno: libc::EACCES
        })
    );
    assert_eq!(
        alloc.query(region.base).unwrap().state,
        PageState::Reserved,
        "unchanged"
    );
    assert_eq!(
        VirtualAlloc::with_strategy(SimOs::apple(), WxStrategy::DualMap).unwrap_err(),
        Error::StrategyUnavailable {
            strategy: WxStrategy::DualMap,
            reason: "shared memory cannot be mapped twice here"
        }
    );
}

#[test]
fn trap_filled_code_traps() {
    let alloc = apple();
    let region = alloc
        .reserve_and_commit(PAGE, Protection::ExecuteRead)
        .unwrap();
    with_write_mode(|| alloc.fill(region.base, 64, alloc.arch().trap_bytes())).unwrap();
    alloc.flush_instruction_cache(region.base, 64).unwrap();
    assert_eq!(
        run(&alloc, region.base),
        Err(fault(region.base, FaultKind::Trap))
    );
    // A never-written page reads as zeros: `udf #0` on arm64, which traps too.
    assert_eq!(
        run(&alloc, region.base + 64),
        Err(fault(region.base + 64, FaultKind::Trap))
    );
}

#[test]
fn decommitted_map_jit_pages_refuse_code() {
    let alloc = apple();
    let region = region_with_code(&alloc, 41);
    alloc.decommit(region.base, PAGE).unwrap();
    assert_eq!(
        alloc.entry_point(region.base),
        Err(Error::NotCommitted { addr: region.base })
    );
    assert_eq!(
        alloc.read(region.base, &mut [0u8; 4]),
        Err(Error::NotCommitted { addr: region.base })
    );
    assert_eq!(alloc.os().resident_frames(), 0, "the memory went back");
}

#[test]
fn protect_regions_fault_where_the_page_tables_say() {
    let alloc =
        VirtualAlloc::with_strategy(SimOs::new(SimRules::linux_aarch64()), WxStrategy::Protect)
            .unwrap();
    let region = alloc
        .reserve_and_commit(4096, Protection::ReadWrite)
        .unwrap();
    let code = alloc.arch().encode_return_u32(8);
    with_write_mode(|| alloc.write(region.base, code.as_bytes())).unwrap();
    // SAFETY: the simulator touches no process memory.
    let raw = unsafe { alloc.os().call(region.base) };
    assert_eq!(
        raw,
        Err(fault(
            region.base,
            FaultKind::ProtectionViolation(Access::Execute)
        ))
    );
    assert_eq!(
        alloc.entry_point(region.base),
        Err(Error::AccessDenied {
            addr: region.base,
            protection: Protection::ReadWrite,
            access: Access::Execute
        })
    );
    alloc
        .protect(region.base, 4096, Protection::ExecuteRead)
        .unwrap();
    alloc.flush_instruction_cache(region.base, 4096).unwrap();
    assert_eq!(run(&alloc, region.base), Ok(8));
}

/// Under the hardened runtime a process may map one MAP_JIT region (the simulator refuses a
/// second): every MAP_JIT reservation, of every allocator in the process, is a range of it.
#[test]
fn map_jit_reservations_of_every_allocator_share_one_region() {
    let os = std::sync::Arc::new(SimOs::apple());
    let heaps = [VirtualAlloc::new(os.clone()), VirtualAlloc::new(os.clone())];
    let mut regions: Vec<RegionInfo> = Vec::new();
    for i in 0..24 {
        let region = heaps[i % 2].reserve((1 + i % 3) * 4 * PAGE).unwrap();
        assert!(region.base.is_multiple_of(64 * 1024), "{:#x}", region.base);
        assert!(os.is_map_jit(region.base));
        regions.push(region);
    }
    assert_eq!(
        os.syscalls().get(SysCall::Mmap),
        1,
        "one mmap(MAP_JIT) for all"
    );
    regions.sort_by_key(|r| r.base);
    for pair in regions.windows(2) {
        assert!(pair[0].base + pair[0].size <= pair[1].base, "{pair:x?}");
    }
    // Code runs from a range as from a region of its own.
    let code = region_with_code(&heaps[1], 7);
    assert_eq!(run(&heaps[1], code.base), Ok(7));
    heaps[1].release(code.base).unwrap();
}

/// A released range goes back to the region, its memory with it, and is handed out again.
#[test]
fn released_map_jit_ranges_are_reused_and_their_memory_given_back() {
    let alloc = apple();
    let first = region_with_code(&alloc, 1);
    assert!(alloc.os().resident_frames() > 0);
    alloc.release(first.base).unwrap();
    assert_eq!(alloc.os().resident_frames(), 0, "the memory went back");
    assert_eq!(
        alloc.os().mapped_pages(),
        0,
        "nothing held but the free region"
    );
    let again = alloc.reserve(PAGE).unwrap();
    assert_eq!(again.base, first.base, "the range is handed out again");
    assert_eq!(alloc.os().syscalls().get(SysCall::Mmap), 1);
}

/// A full region is a typed error, and stays usable: what is released merges back.
#[test]
fn a_full_map_jit_region_refuses_with_a_typed_error() {
    let region = 1 << 20;
    let alloc = VirtualAlloc::new(SimOs::new(SimRules::apple().with_jit_region_size(region)));
    let half = alloc.reserve(region / 2).unwrap();
    // The simulator's first address is not 64 KiB-aligned: one granule less than the
    // region is the most that can ever fit.
    let most = region - 64 * 1024;
    assert_eq!(
        alloc.reserve(most).map(|r| r.base),
        Err(Error::MapJitRegionFull {
            requested: most,
            region,
        })
    );
    assert_eq!(alloc.stats().regions, 1, "the refusal left nothing behind");
    alloc.release(half.base).unwrap();
    assert!(
        alloc.reserve(most).is_ok(),
        "the half merged back with the rest"
    );
}
