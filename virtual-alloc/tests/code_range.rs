//! Code ranges on the simulated OS, under every strategy: regions are carved from the one
//! span reserved up front, run code there, give their memory back on release and their
//! span to the next region; a full range and every refused system call are typed errors
//! that change nothing.

use std::sync::Arc;

use codeheap_virtual_alloc::sim::{SimOs, SimRules};
use codeheap_virtual_alloc::{
    CodeRangeConfig, Error, Os, Protection, RegionInfo, SysCall, VirtualAlloc, WriteScope,
    WxStrategy, with_write_mode,
};

const KIB: usize = 1024;
const RANGE: usize = 1024 * KIB;

/// Every strategy, each on the simulated OS that has it.
fn setups() -> Vec<(WxStrategy, Arc<SimOs>)> {
    vec![
        (WxStrategy::DualMap, Arc::new(SimOs::linux())),
        (WxStrategy::Protect, Arc::new(SimOs::linux())),
        (WxStrategy::Rwx, Arc::new(SimOs::linux())),
        (WxStrategy::MapJit, Arc::new(SimOs::apple())),
    ]
}

fn with_range(strategy: WxStrategy, os: &Arc<SimOs>) -> VirtualAlloc<Arc<SimOs>> {
    VirtualAlloc::with_code_range(Arc::clone(os), Some(strategy), CodeRangeConfig::new(RANGE))
        .unwrap_or_else(|err| panic!("{strategy}: {err}"))
}

/// Commits `region`'s first page, writes `return value` there, makes it runnable the
/// strategy's way and runs it on the simulated CPU.
fn run_code_in(alloc: &VirtualAlloc<Arc<SimOs>>, region: &RegionInfo, value: u32) -> u32 {
    let page = alloc.page_size();
    let (writable, runnable) = match region.strategy {
        WxStrategy::Protect => (Protection::ReadWrite, Protection::ExecuteRead),
        WxStrategy::Rwx => (Protection::ExecuteReadWrite, Protection::ExecuteReadWrite),
        _ => (Protection::ExecuteRead, Protection::ExecuteRead),
    };
    alloc.commit(region.base, page, writable).unwrap();
    let code = alloc.arch().encode_return_u32(value);
    with_write_mode(|| alloc.write(region.base, code.as_bytes())).unwrap();
    alloc.protect(region.base, page, runnable).unwrap();
    alloc
        .flush_instruction_cache(region.base, code.as_bytes().len())
        .unwrap();
    // SAFETY: the simulator decodes the code; it touches no process memory.
    unsafe { alloc.call(region.base) }.unwrap()
}

#[test]
fn every_region_is_carved_from_the_range_without_a_mapping_of_its_own() {
    for (strategy, os) in setups() {
        let alloc = with_range(strategy, &os);
        let range = alloc.code_range().expect("a code range");
        assert_eq!(range.len(), RANGE, "{strategy}");
        assert!(range.start.is_multiple_of(alloc.allocation_granularity()));
        let mapped = os.mapped_pages();
        let calls = os.syscalls();
        let regions: Vec<RegionInfo> = [64 * KIB, 200 * KIB, 4 * KIB, 128 * KIB]
            .into_iter()
            .map(|size| alloc.reserve(size).unwrap())
            .collect();
        // No region was mapped: the span was, once, when the allocator was made.
        assert_eq!(os.mapped_pages(), mapped, "{strategy}");
        assert_eq!(os.syscalls().since(&calls).get(SysCall::Mmap), 0);
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            assert!(range.start <= region.base && region.end() <= range.end);
            assert!(region.base.is_multiple_of(64 * KIB), "{strategy}");
            assert!(
                spans
                    .iter()
                    .all(|&(b, e)| region.end() <= b || e <= region.base)
            );
            spans.push((region.base, region.end()));
            assert_eq!(run_code_in(&alloc, region, 40 + i as u32), 40 + i as u32);
        }
        let carved: usize = regions.iter().map(|r| r.size).sum();
        assert_eq!(alloc.code_range_free_bytes(), Some(RANGE - carved));
        assert_eq!(alloc.stats().regions, 4);
    }
}

#[test]
fn a_full_range_is_a_typed_error_and_a_released_span_is_carved_again() {
    for (strategy, os) in setups() {
        let alloc = with_range(strategy, &os);
        let regions: Vec<RegionInfo> = (0..RANGE / (256 * KIB))
            .map(|_| alloc.reserve(256 * KIB).unwrap())
            .collect();
        let before = alloc.stats();
        assert_eq!(
            alloc.reserve(64 * KIB),
            Err(Error::CodeRangeFull {
                requested: 64 * KIB,
                range: RANGE
            }),
            "{strategy}"
        );
        assert_eq!(alloc.stats(), before, "a refused reserve changes nothing");
        assert_eq!(alloc.code_range_free_bytes(), Some(0));

        assert_eq!(run_code_in(&alloc, &regions[1], 7), 7);
        alloc.release(regions[1].base).unwrap();
        assert_eq!(alloc.code_range_free_bytes(), Some(256 * KIB));
        assert!(!alloc.is_jit_address(regions[1].base));
        let again = alloc.reserve(256 * KIB).unwrap();
        assert_eq!(again.base, regions[1].base, "{strategy}");
        // Carved again, its pages are reserved, not committed with the old code.
        assert_eq!(
            alloc.read(again.base, &mut [0; 4]),
            Err(Error::NotCommitted { addr: again.base })
        );
        assert_eq!(run_code_in(&alloc, &again, 8), 8);
    }
}

#[test]
fn a_released_region_gives_its_memory_back() {
    for (strategy, os) in setups() {
        let alloc = with_range(strategy, &os);
        let region = alloc.reserve(128 * KIB).unwrap();
        let resident = os.resident_frames();
        assert_eq!(run_code_in(&alloc, &region, 1), 1);
        assert!(os.resident_frames() > resident, "{strategy}");
        alloc.release(region.base).unwrap();
        assert_eq!(os.resident_frames(), resident, "{strategy}");
        assert_eq!(alloc.stats().committed_bytes, 0);
        assert_eq!(alloc.stats().reserved_bytes, 0);
        // The span stays mapped for the next region: inaccessible again (MAP_JIT pages
        // cannot be made so; their memory is what goes back).
        assert!(os.is_mapped(region.base));
        if strategy != WxStrategy::MapJit {
            assert_eq!(os.protection_at(region.base), Some(Protection::NoAccess));
        }
    }
}

#[test]
fn dual_mapped_regions_share_one_memfd_at_their_own_offsets() {
    let os = Arc::new(SimOs::linux());
    let alloc = with_range(WxStrategy::DualMap, &os);
    assert_eq!(os.shared_objects(), 1);
    let page = alloc.page_size();
    let first = alloc.reserve(64 * KIB).unwrap();
    let second = alloc.reserve(64 * KIB).unwrap();
    assert_eq!(os.shared_objects(), 1, "carving makes no memfd");
    assert_eq!(first.base, alloc.code_range().unwrap().start);
    assert_eq!(
        second.write_base - first.write_base,
        second.base - first.base
    );
    for region in [&first, &second] {
        alloc
            .commit(region.base, 2 * page, Protection::ExecuteRead)
            .unwrap();
        with_write_mode(|| alloc.fill(region.base, 2 * page, &[0x5A])).unwrap();
    }
    // Decommitting the second region's pages drops those of the memfd, not the first's
    // (which lie at the start of the memfd, where the second's offset in its own region
    // would point).
    alloc.decommit(second.base, 2 * page).unwrap();
    alloc
        .commit(second.base, 2 * page, Protection::ExecuteRead)
        .unwrap();
    let (mut old, mut kept) = ([0xFF; 8], [0; 8]);
    alloc.read(second.base + page, &mut old).unwrap();
    alloc.read(first.base + page, &mut kept).unwrap();
    assert_eq!(old, [0; 8], "recommitted pages read as zero");
    assert_eq!(kept, [0x5A; 8], "the neighbour's pages are untouched");
}

#[test]
fn a_write_through_a_released_regions_writable_view_faults() {
    let os = Arc::new(SimOs::linux());
    let alloc = with_range(WxStrategy::DualMap, &os);
    let region = alloc.reserve(64 * KIB).unwrap();
    alloc
        .commit(region.base, alloc.page_size(), Protection::ExecuteRead)
        .unwrap();
    let _write = WriteScope::enter();
    // SAFETY: the simulator touches no process memory.
    let raw_write = || unsafe { os.write(region.write_base, &[0xCC]) };
    assert_eq!(raw_write(), Ok(()));
    alloc.release(region.base).unwrap();
    assert!(matches!(raw_write(), Err(Error::Fault(_))));
}

#[test]
fn regions_of_another_strategy_are_mapped_outside_the_range() {
    let os = Arc::new(SimOs::linux());
    let alloc = with_range(WxStrategy::DualMap, &os);
    let range = alloc.code_range().unwrap();
    let mapped = os.mapped_pages();
    let outside = alloc.reserve_with(64 * KIB, WxStrategy::Protect).unwrap();
    assert!(outside.end() <= range.start || range.end <= outside.base);
    assert_eq!(alloc.code_range_free_bytes(), Some(RANGE));
    alloc.release(outside.base).unwrap();
    assert_eq!(alloc.code_range_free_bytes(), Some(RANGE));
    assert_eq!(
        os.mapped_pages(),
        mapped,
        "unmapped, not handed to the range"
    );
}

#[test]
fn dropping_the_allocator_unmaps_the_range_and_closes_its_memfd() {
    for (strategy, os) in setups() {
        let mapped = os.mapped_pages();
        let alloc = with_range(strategy, &os);
        let region = alloc.reserve(64 * KIB).unwrap();
        assert_eq!(run_code_in(&alloc, &region, 3), 3);
        let calls = os.syscalls();
        drop(alloc);
        // The span goes whole (each of its views once), not region by region.
        let unmaps = os.syscalls().since(&calls).get(SysCall::Munmap);
        let views = match strategy {
            WxStrategy::DualMap => 2,
            WxStrategy::MapJit => 0,
            _ => 1,
        };
        assert_eq!(unmaps, views, "{strategy}");
        assert_eq!(os.shared_objects(), 0, "{strategy}");
        assert_eq!(os.resident_frames(), 0, "{strategy}");
        if strategy != WxStrategy::MapJit {
            // (The process's MAP_JIT region stays mapped for good.)
            assert_eq!(os.mapped_pages(), mapped, "{strategy}");
        }
    }
}

#[test]
fn a_range_near_an_address_lies_within_call_reach_of_it_or_is_refused() {
    for (strategy, os) in setups() {
        // An address of the simulated process: a region mapped outside any range.
        let plain = VirtualAlloc::with_strategy(Arc::clone(&os), strategy).unwrap();
        let near = plain.reserve(64 * KIB).unwrap().base;
        let reach = plain.arch().call_reach();
        let (mapped, shared) = (os.mapped_pages(), os.shared_objects());
        let config = CodeRangeConfig::new(RANGE).near(near);
        let alloc = VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config);
        let range = alloc.as_ref().unwrap().code_range().unwrap();
        assert!(range.end.max(near + 1) - range.start.min(near) <= reach);
        drop(alloc);

        // Far from everything the simulated process maps: refused after its tries, each
        // unmapped again.
        let far = usize::MAX / 2;
        let config = CodeRangeConfig::new(RANGE).near(far);
        assert_eq!(
            VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config).map(drop),
            Err(Error::CodeRangeOutOfReach {
                near: far,
                size: RANGE
            }),
            "{strategy}"
        );
        assert_eq!(os.shared_objects(), shared, "{strategy}");
        if strategy != WxStrategy::MapJit {
            assert_eq!(os.mapped_pages(), mapped, "{strategy}");
        }
        // A range that cannot fit in the reach at all is refused without a try: no call
        // beyond the strategy's own probe.
        let calls = os.syscalls();
        drop(VirtualAlloc::with_strategy(Arc::clone(&os), strategy));
        let (probe, calls) = (os.syscalls().since(&calls).total(), os.syscalls());
        let config = CodeRangeConfig::new(reach).near(near);
        assert_eq!(
            VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config).map(drop),
            Err(Error::CodeRangeOutOfReach { near, size: reach })
        );
        assert_eq!(os.syscalls().since(&calls).total(), probe, "{strategy}");
        // Allowed to shrink, it settles for a half that fits, within reach.
        let config = config.or_smaller_down_to(RANGE);
        let alloc = VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config);
        let range = alloc.as_ref().unwrap().code_range().unwrap();
        assert!(
            (RANGE..reach).contains(&range.len()),
            "{strategy}: {range:x?}"
        );
        assert!(range.end.max(near + 1) - range.start.min(near) <= reach);
    }
}

#[test]
fn bad_sizes_are_typed_errors() {
    let os = || SimOs::linux();
    assert_eq!(
        VirtualAlloc::with_code_range(os(), None, CodeRangeConfig::new(0)).map(drop),
        Err(Error::ZeroSize)
    );
    assert_eq!(
        VirtualAlloc::with_code_range(os(), None, CodeRangeConfig::new(usize::MAX - 100)).map(drop),
        Err(Error::SizeOverflow {
            size: usize::MAX - 100
        })
    );
    // Rounded up to the granularity.
    let alloc = VirtualAlloc::with_code_range(os(), None, CodeRangeConfig::new(100 * KIB)).unwrap();
    assert_eq!(alloc.code_range().unwrap().len(), 128 * KIB);
    // A MAP_JIT range larger than the process's one MAP_JIT region.
    let apple = SimOs::new(SimRules::apple().with_jit_region_size(RANGE));
    assert!(matches!(
        VirtualAlloc::with_code_range(apple, None, CodeRangeConfig::new(2 * RANGE)).map(drop),
        Err(Error::MapJitRegionFull { .. })
    ));
}

/// The system calls an allocator makes to probe for `strategy` on the simulated Linux.
fn probe_calls(strategy: WxStrategy) -> u64 {
    let os = Arc::new(SimOs::linux());
    drop(VirtualAlloc::with_strategy(Arc::clone(&os), strategy));
    os.syscalls().total()
}

/// A range the OS has no room for is tried again at half the size, down to its minimum:
/// each refused try leaves nothing mapped, the range reserved is the first size that fit,
/// and its regions run code. Without a minimum, or for another error, nothing smaller is
/// tried.
#[test]
fn a_range_without_room_is_halved_down_to_its_minimum() {
    let asked = 4 * RANGE;
    let config = CodeRangeConfig::new(asked).or_smaller_down_to(RANGE / 2);
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let probe = probe_calls(strategy);
        // One try refused per planned failure (its first system call after the strategy's
        // probe): 4, 2, 1 and 1/2 MiB, then no more.
        for refused in 0..5 {
            let os = Arc::new(SimOs::linux());
            let before = (os.mapped_pages(), os.shared_objects());
            for _ in 0..refused {
                os.fail_after(probe, libc::ENOMEM);
            }
            let made = VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config);
            let case = format!("{strategy}, {refused} refused");
            if refused == 4 {
                assert!(matches!(made, Err(Error::OutOfMemory { .. })), "{case}");
                assert_eq!((os.mapped_pages(), os.shared_objects()), before, "{case}");
                continue;
            }
            let alloc = made.unwrap_or_else(|err| panic!("{case}: {err}"));
            let range = alloc.code_range().unwrap();
            assert_eq!(range.len(), asked >> refused, "{case}");
            assert_eq!(alloc.code_range_free_bytes(), Some(range.len()), "{case}");
            let region = alloc.reserve(64 * KIB).unwrap();
            assert!(range.contains(&region.base), "{case}");
            assert_eq!(run_code_in(&alloc, &region, refused), refused, "{case}");
            // Only the span that fit is mapped: as much as a range made at that size.
            let control = Arc::new(SimOs::linux());
            let fitted = CodeRangeConfig::new(range.len());
            let made = VirtualAlloc::with_code_range(Arc::clone(&control), Some(strategy), fitted);
            let control_alloc = made.unwrap();
            control_alloc.reserve(64 * KIB).unwrap();
            assert_eq!(os.mapped_pages(), control.mapped_pages(), "{case}");
        }

        // Without a minimum nothing smaller is tried; nor for an error other than no room:
        // the one refused call is the last.
        for (config, errno) in [
            (CodeRangeConfig::new(asked), libc::ENOMEM),
            (config, libc::EACCES),
        ] {
            let os = Arc::new(SimOs::linux());
            os.fail_after(probe, errno);
            let made = VirtualAlloc::with_code_range(Arc::clone(&os), Some(strategy), config);
            let case = format!("{strategy}, errno {errno}");
            let refused = match made {
                Err(Error::OutOfMemory { .. }) => errno == libc::ENOMEM,
                Err(Error::Os { errno: found, .. }) => found == errno,
                _ => false,
            };
            assert!(refused, "{case}: {:?}", made.map(drop));
            assert_eq!(os.syscalls().total(), probe + 1, "{case}");
            assert_eq!((os.mapped_pages(), os.shared_objects()), (0, 0), "{case}");
        }
    }

    // MAP_JIT: a range larger than what is left of the process's region settles for the
    // largest half that fits, as a range asked for at that size alone would.
    let apple = || SimOs::new(SimRules::apple().with_jit_region_size(RANGE));
    let fits = |size| VirtualAlloc::with_code_range(apple(), None, CodeRangeConfig::new(size));
    let largest = [asked, asked / 2, RANGE, RANGE / 2]
        .into_iter()
        .find(|&size| fits(size).is_ok());
    assert!(largest.is_some_and(|size| size < asked), "{largest:?}");
    let alloc = VirtualAlloc::with_code_range(apple(), None, config).unwrap();
    assert_eq!(alloc.code_range().map(|range| range.len()), largest);
    let apple = SimOs::new(SimRules::apple().with_jit_region_size(RANGE / 4));
    assert!(matches!(
        VirtualAlloc::with_code_range(apple, None, config).map(drop),
        Err(Error::MapJitRegionFull { .. })
    ));
}

/// Each system call a code range makes, refused in turn: the call fails with the OS's
/// error and the allocator (and the simulated OS) are as they were.
#[test]
fn refused_system_calls_change_nothing() {
    // Making the range, each of its own calls (after the strategy's probe) refused in
    // turn: no mapping or memfd is left behind.
    let make = |os: &Arc<SimOs>| {
        VirtualAlloc::with_code_range(
            Arc::clone(os),
            Some(WxStrategy::DualMap),
            CodeRangeConfig::new(RANGE),
        )
    };
    let probe = probe_calls(WxStrategy::DualMap);
    let made = {
        let os = Arc::new(SimOs::linux());
        let alloc = make(&os).unwrap();
        let calls = os.syscalls().total();
        drop(alloc);
        calls
    };
    assert!(
        made > probe + 4,
        "a memfd, the views, the trims and the hiding"
    );
    for call in probe..made {
        let os = Arc::new(SimOs::linux());
        os.fail_after(call, libc::ENOMEM);
        let made = make(&os).map(drop);
        assert!(matches!(made, Err(Error::OutOfMemory { .. })), "{made:?}");
        assert_eq!((os.mapped_pages(), os.shared_objects()), (0, 0), "{made:?}");
    }
    // Carving: the writable view cannot be shown.
    let os = Arc::new(SimOs::linux());
    let alloc = with_range(WxStrategy::DualMap, &os);
    os.fail_next(SysCall::Mprotect, libc::EIO);
    assert!(matches!(alloc.reserve(64 * KIB), Err(Error::Os { .. })));
    assert_eq!(alloc.code_range_free_bytes(), Some(RANGE));
    assert_eq!(alloc.stats().regions, 0);
    // Releasing: the memfd refuses to drop the pages, so the region stays, code and all.
    let region = alloc.reserve(64 * KIB).unwrap();
    assert_eq!(run_code_in(&alloc, &region, 9), 9);
    os.fail_next(SysCall::Fallocate, libc::EIO);
    assert!(matches!(alloc.release(region.base), Err(Error::Os { .. })));
    assert_eq!(alloc.stats().regions, 1);
    assert_eq!(alloc.code_range_free_bytes(), Some(RANGE - 64 * KIB));
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { alloc.call(region.base) }, Ok(9), "still runnable");
    alloc.release(region.base).unwrap();
    assert_eq!(alloc.code_range_free_bytes(), Some(RANGE));
    // Under Protect the pages go back in one call; refused, the region stays.
    let os = Arc::new(SimOs::linux());
    let alloc = with_range(WxStrategy::Protect, &os);
    let region = alloc.reserve(64 * KIB).unwrap();
    assert_eq!(run_code_in(&alloc, &region, 5), 5);
    os.fail_next(SysCall::Mmap, libc::ENOMEM);
    assert!(alloc.release(region.base).is_err());
    // SAFETY: as above.
    assert_eq!(unsafe { alloc.call(region.base) }, Ok(5), "still runnable");
    alloc.release(region.base).unwrap();
}
