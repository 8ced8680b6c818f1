//! The page allocator's policies and checks, on the simulated OS.

use codeheap_page_allocator::{
    Error, PageAllocator, PageAllocatorConfig, PageAllocatorStats, SegmentList,
};
use codeheap_virtual_alloc::sim::{SimOs, SimRules};
use codeheap_virtual_alloc::{
    self as vm, PageState, Protection, SysCall, VirtualAlloc, WxStrategy,
};

fn apple(config: PageAllocatorConfig) -> PageAllocator<SimOs> {
    PageAllocator::new(VirtualAlloc::new(SimOs::apple()), config).unwrap()
}

fn linux(strategy: WxStrategy, config: PageAllocatorConfig) -> PageAllocator<SimOs> {
    let vm = VirtualAlloc::with_strategy(SimOs::linux(), strategy).unwrap();
    PageAllocator::new(vm, config).unwrap()
}

fn every_strategy(config: PageAllocatorConfig) -> Vec<PageAllocator<SimOs>> {
    vec![
        apple(config),
        linux(WxStrategy::DualMap, config),
        linux(WxStrategy::Protect, config),
        linux(WxStrategy::Rwx, config),
    ]
}

fn checked(pages: &PageAllocator<SimOs>) -> PageAllocatorStats {
    pages.check_invariants().unwrap();
    pages.stats()
}

#[test]
fn segments_commit_on_demand_and_fill_up() {
    for pages in every_strategy(PageAllocatorConfig::default()) {
        let page = pages.page_size();
        let first = pages.alloc_pages(1).unwrap();
        assert_eq!(first.addr % 0x10000, 0, "segments are 64 KiB-aligned");
        assert_eq!(first.addr, first.segment);
        assert!(!first.large);
        let info = pages.vm().query(first.addr).unwrap();
        assert_eq!(info.state, PageState::Committed(Protection::ReadWrite));
        assert_eq!(info.size, page, "only the page asked for is committed");
        assert_eq!(
            pages.segment_list(first.addr),
            Some(SegmentList::Decommitted)
        );

        let rest = pages.alloc_pages(29).unwrap();
        assert_eq!(
            rest.addr,
            first.addr + page,
            "first fit in the same segment"
        );
        assert_eq!(pages.segment_list(first.addr), Some(SegmentList::Full));

        let next = pages.alloc_pages(1).unwrap();
        assert_ne!(
            next.segment, first.segment,
            "a full segment is not searched"
        );
        let stats = checked(&pages);
        assert_eq!(stats.used_bytes, 31 * page);
        assert_eq!(stats.segments.full, 1);
        assert_eq!(stats.segments.decommitted, 1);
        assert_eq!(stats.segments_created, 2);
        // 31 code pages; the secondary areas wait for their first slot.
        assert_eq!(stats.committed_bytes, 31 * page);
        assert_eq!(stats.reserved_bytes, 64 * page);
        let slot = pages.alloc_secondary(next.addr).unwrap();
        assert_eq!(slot.segment, next.segment);
        assert_eq!(
            checked(&pages).committed_bytes,
            33 * page,
            "one area of 2 pages"
        );
        pages.release_secondary(slot.addr).unwrap();
        let again = pages.alloc_secondary(next.addr).unwrap();
        assert_eq!(checked(&pages).committed_bytes, 33 * page, "committed once");
        pages.release_secondary(again.addr).unwrap();
    }
}

#[test]
fn requests_beyond_a_segment_get_a_large_segment() {
    for pages in every_strategy(PageAllocatorConfig::default()) {
        let page = pages.page_size();
        let run = pages.alloc_pages(31).unwrap();
        assert!(run.large);
        let stats = checked(&pages);
        assert_eq!(stats.segments.large, 1);
        assert_eq!(stats.used_bytes, 31 * page);
        assert_eq!(
            pages.release_pages(run.addr + page, 30),
            Err(Error::PartialLargeRelease {
                base: run.addr,
                pages: 31
            })
        );
        assert_eq!(
            pages.release_pages(run.addr, 30),
            Err(Error::PartialLargeRelease {
                base: run.addr,
                pages: 31
            })
        );
        pages.release_pages(run.addr, 31).unwrap();
        let stats = checked(&pages);
        assert_eq!(
            (stats.segments.large, stats.reserved_bytes, stats.used_bytes),
            (0, 0, 0)
        );
        assert_eq!(pages.vm().os().mapped_pages(), 0);
    }
}

#[test]
fn a_code_heap_keeps_no_free_pages_and_returns_empty_segments() {
    for pages in every_strategy(PageAllocatorConfig::default()) {
        let page = pages.page_size();
        let a = pages.alloc_pages(3).unwrap();
        let b = pages.alloc_pages(2).unwrap();
        pages.release_pages(a.addr, 3).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.free_bytes, 0);
        assert_eq!(
            stats.committed_bytes,
            2 * page,
            "2 code pages, no secondary area yet"
        );
        assert_eq!(pages.vm().query(a.addr).unwrap().state, PageState::Reserved);

        pages.release_pages(b.addr, 2).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.segments_released, 1);
        assert_eq!((stats.reserved_bytes, stats.committed_bytes), (0, 0));
        assert_eq!(
            pages.vm().os().mapped_pages(),
            0,
            "the segment went back to the OS"
        );
        assert_eq!(pages.vm().os().shared_objects(), 0);
    }
}

#[test]
fn kept_free_pages_are_reused_without_a_system_call() {
    let config = PageAllocatorConfig {
        max_free_pages: 4,
        ..PageAllocatorConfig::default()
    };
    let pages = linux(WxStrategy::Protect, config);
    let page = pages.page_size();
    let keep = pages.alloc_pages(1).unwrap();
    let run = pages.alloc_pages(6).unwrap();
    pages.release_pages(run.addr, 6).unwrap();
    let stats = checked(&pages);
    assert_eq!(stats.free_bytes, 4 * page, "4 kept, 2 decommitted");
    assert_eq!(
        pages.vm().query(run.addr + 4 * page).unwrap().state,
        PageState::Reserved
    );

    let before = pages.vm().os().syscalls();
    let again = pages.alloc_pages(4).unwrap();
    assert_eq!(again.addr, run.addr);
    assert_eq!(pages.vm().os().syscalls().since(&before).total(), 0);

    // Pages released executable come back executable, without a system call, and say so;
    // a run whose pages were released with different protections comes back read-write.
    pages
        .protect_pages(
            again.addr,
            4,
            Protection::ExecuteRead,
            Protection::ReadWrite,
        )
        .unwrap();
    pages.release_pages(again.addr, 4).unwrap();
    let before = pages.vm().os().syscalls();
    let reused = pages.alloc_pages(2).unwrap();
    assert_eq!(pages.vm().os().syscalls().since(&before).total(), 0);
    assert_eq!(
        (reused.fresh, reused.protection),
        (false, Protection::ExecuteRead)
    );
    assert_eq!(
        pages.vm().query(reused.addr).unwrap().state,
        PageState::Committed(Protection::ExecuteRead)
    );
    // A run that mixes protections comes back read-write, all of it: executable pages first
    // and last, read-write between, so that neither its first page's protection nor a
    // change short of its end would do.
    pages.release_pages(reused.addr, 2).unwrap();
    let other = pages.alloc_pages(4).unwrap();
    assert_eq!(other.protection, Protection::ExecuteRead);
    pages
        .protect_pages(
            other.addr + page,
            1,
            Protection::ReadWrite,
            Protection::ExecuteRead,
        )
        .unwrap();
    pages.release_pages(other.addr, 4).unwrap();
    let mixed = pages.alloc_pages(3).unwrap();
    assert_eq!(mixed.addr, other.addr);
    assert_eq!(mixed.protection, Protection::ReadWrite);
    for i in 0..3 {
        assert_eq!(
            pages.vm().query(mixed.addr + i * page).unwrap().state,
            PageState::Committed(Protection::ReadWrite),
            "page {i} of the run"
        );
    }
    pages.release_pages(mixed.addr, 3).unwrap();
    let reused = pages.alloc_pages(2).unwrap();
    checked(&pages);

    assert_eq!(pages.decommit_free_pages(), Ok(2));
    let stats = checked(&pages);
    assert_eq!(stats.free_bytes, 0);
    pages.release_pages(reused.addr, 2).unwrap();
    pages.release_pages(keep.addr, 1).unwrap();
    pages.decommit_free_pages().unwrap();
    assert_eq!(checked(&pages).reserved_bytes, 0);
}

#[test]
fn protect_calls_skip_the_system_on_map_jit_and_dual_map() {
    for pages in every_strategy(PageAllocatorConfig::default()) {
        let strategy = pages.vm().strategy();
        let mut runs = Vec::new();
        for n in [1, 2, 5, 31] {
            runs.push(pages.alloc_pages(n).unwrap());
        }
        let before = pages.vm().os().syscalls().get(SysCall::Mprotect);
        for _ in 0..3 {
            for run in &runs {
                pages
                    .protect_pages(
                        run.addr,
                        run.pages,
                        Protection::ExecuteRead,
                        Protection::ReadWrite,
                    )
                    .unwrap();
                pages
                    .protect_pages(
                        run.addr,
                        run.pages,
                        Protection::ReadWrite,
                        Protection::ExecuteRead,
                    )
                    .unwrap();
            }
        }
        let made = pages.vm().os().syscalls().get(SysCall::Mprotect) - before;
        let stats = checked(&pages);
        assert_eq!(stats.protect_calls, 24);
        if strategy == WxStrategy::Protect {
            assert_eq!(
                (made, stats.protect_syscalls, stats.protect_skipped),
                (24, 24, 0)
            );
        } else {
            assert_eq!(
                (made, stats.protect_syscalls, stats.protect_skipped),
                (0, 0, 24),
                "{strategy}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors_that_change_nothing() {
    for pages in every_strategy(PageAllocatorConfig::default()) {
        let page = pages.page_size();
        let a = pages.alloc_pages(2).unwrap();
        let other = pages.alloc_pages(30).unwrap(); // fills a second segment
        assert_ne!(a.segment, other.segment);
        pages.release_pages(a.addr + page, 1).unwrap();
        let before = checked(&pages);
        let os_before = pages.vm().os().syscalls();

        let cases = [
            (pages.alloc_pages(0).map(drop), Error::ZeroPages),
            (
                pages.alloc_pages(usize::MAX / 2).map(drop),
                Error::PageCountOverflow {
                    pages: usize::MAX / 2,
                },
            ),
            (
                pages.release_pages(a.addr + 1, 1),
                Error::Unaligned {
                    addr: a.addr + 1,
                    align: page,
                },
            ),
            (
                pages.release_pages(0x1000_0000, 1),
                Error::NotInSegment { addr: 0x1000_0000 },
            ),
            (pages.release_pages(a.addr, 0), Error::ZeroPages),
            (
                pages.release_pages(a.addr, 3),
                Error::NotAllocated {
                    addr: a.addr + page,
                },
            ),
            (
                pages.release_pages(a.addr + page, 1),
                Error::NotAllocated {
                    addr: a.addr + page,
                },
            ),
            (
                pages.release_pages(other.addr + 29 * page, 2),
                Error::CrossesSegment {
                    addr: other.addr + 29 * page,
                    pages: 2,
                },
            ),
            (
                pages.release_pages(a.addr + 30 * page, 1),
                Error::CrossesSegment {
                    addr: a.addr + 30 * page,
                    pages: 1,
                },
            ),
            (
                pages.protect_pages(a.addr, 1, Protection::ExecuteRead, Protection::ExecuteRead),
                Error::Vm(vm::Error::ProtectionMismatch {
                    addr: a.addr,
                    expected: Protection::ExecuteRead,
                    found: Protection::ReadWrite,
                }),
            ),
            (
                pages.protect_pages(a.addr, 2, Protection::ExecuteRead, Protection::ReadWrite),
                Error::NotAllocated {
                    addr: a.addr + page,
                },
            ),
            (
                pages.protect_pages(
                    a.addr,
                    usize::MAX,
                    Protection::ExecuteRead,
                    Protection::ReadWrite,
                ),
                Error::PageCountOverflow { pages: usize::MAX },
            ),
            (
                pages.release_secondary(a.addr),
                Error::NotASlot { addr: a.addr },
            ),
            (
                pages.alloc_secondary(0x10).map(drop),
                Error::NotInSegment { addr: 0x10 },
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(outcome, Err(expected));
        }
        assert_eq!(checked(&pages), before, "nothing changed");
        assert_eq!(
            pages.vm().os().syscalls().since(&os_before).total(),
            0,
            "nothing reached the OS"
        );
    }
}

#[test]
fn an_exhausted_secondary_area_fills_the_segment() {
    let config = PageAllocatorConfig {
        secondary_pages: 1,
        secondary_slot_size: 4096,
        ..PageAllocatorConfig::default()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let run = pages.alloc_pages(1).unwrap();
    assert!(pages.can_alloc_secondary(run.addr));
    let slot = pages.alloc_secondary(run.addr).unwrap();
    assert_eq!(
        slot.addr,
        run.segment + 31 * 4096,
        "the secondary area follows the code pages"
    );
    assert_eq!(slot.size, 4096);
    assert!(!pages.can_alloc_secondary(run.addr));
    assert_eq!(pages.segment_list(run.addr), Some(SegmentList::Full));
    assert_eq!(
        pages.alloc_secondary(run.addr),
        Err(Error::SecondaryExhausted {
            segment: run.segment
        })
    );
    let elsewhere = pages.alloc_pages(1).unwrap();
    assert_ne!(
        elsewhere.segment, run.segment,
        "a full segment hands out no pages"
    );

    let changes = pages.secondary_state_changes();
    pages.release_secondary(slot.addr).unwrap();
    assert_eq!(pages.secondary_state_changes(), changes + 1);
    assert_eq!(pages.segment_list(run.addr), Some(SegmentList::Decommitted));
    assert_eq!(
        pages.release_secondary(slot.addr),
        Err(Error::NotASlot { addr: slot.addr })
    );
    // The slot memory is data: readable and writable, never executable.
    assert_eq!(
        pages.vm().query(slot.addr).unwrap().state,
        PageState::Committed(Protection::ReadWrite)
    );
    checked(&pages);
}

#[test]
fn slots_keep_an_otherwise_unused_segment_alive() {
    let pages = apple(PageAllocatorConfig::default());
    let run = pages.alloc_pages(1).unwrap();
    let slot = pages.alloc_secondary(run.addr).unwrap();
    pages.release_pages(run.addr, 1).unwrap();
    assert_eq!(
        checked(&pages).segments.decommitted,
        1,
        "its slot is still in use"
    );
    pages.release_secondary(slot.addr).unwrap();
    assert_eq!(checked(&pages).reserved_bytes, 0);

    let large = pages.alloc_pages(40).unwrap();
    let slot = pages.alloc_secondary(large.addr + 5).unwrap();
    assert_eq!(
        pages.release_pages(large.addr, 40),
        Err(Error::SecondaryInUse {
            segment: large.addr,
            slots: 1
        })
    );
    pages.release_secondary(slot.addr).unwrap();
    pages.release_pages(large.addr, 40).unwrap();
    assert_eq!(pages.vm().os().mapped_pages(), 0);
}

#[test]
fn geometry_follows_sixteen_kib_pages() {
    let pages = apple(PageAllocatorConfig::default());
    assert_eq!(pages.page_size(), 16 * 1024);
    let run = pages.alloc_pages(1).unwrap();
    pages.alloc_secondary(run.addr).unwrap();
    let stats = checked(&pages);
    assert_eq!(stats.secondary_slots_total, 2 * 16 * 1024 / 64);
    assert_eq!(stats.reserved_bytes, 32 * 16 * 1024);
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        PageAllocatorConfig {
            segment_pages: 0,
            ..Default::default()
        },
        PageAllocatorConfig {
            segment_pages: 65,
            ..Default::default()
        },
        PageAllocatorConfig {
            secondary_pages: 32,
            ..Default::default()
        },
        PageAllocatorConfig {
            secondary_slot_size: 48,
            ..Default::default()
        },
        PageAllocatorConfig {
            secondary_slot_size: 8,
            ..Default::default()
        },
        PageAllocatorConfig {
            secondary_slot_size: 16,
            secondary_pages: 20,
            ..Default::default()
        },
    ];
    for config in bad {
        let vm = VirtualAlloc::new(SimOs::linux());
        assert!(
            matches!(
                PageAllocator::new(vm, config),
                Err(Error::InvalidConfig { .. })
            ),
            "{config:?}"
        );
    }
    let vm = VirtualAlloc::new(SimOs::new(SimRules::linux().with_page_size(65536)));
    assert!(
        PageAllocator::new(vm, PageAllocatorConfig::default()).is_ok(),
        "64 KiB pages work"
    );
}

/// Runs `op` with the k-th system call failing; a failure must leave everything as it was.
fn fails_cleanly<T>(
    pages: &PageAllocator<SimOs>,
    k: u64,
    op: impl FnOnce() -> Result<T, Error>,
) -> Option<T> {
    let before = checked(pages);
    pages.vm().os().fail_after(k, libc::ENOMEM);
    let outcome = op();
    pages.vm().os().clear_failures();
    match outcome {
        Ok(value) => Some(value),
        Err(err) => {
            assert!(matches!(err, Error::Vm(_)), "{err:?}");
            assert_eq!(checked(pages), before, "failing call {k} left a trace");
            None
        }
    }
}

#[test]
fn os_refusals_change_nothing() {
    for pages in every_strategy(PageAllocatorConfig {
        max_free_pages: 1,
        ..Default::default()
    }) {
        let first = pages.alloc_pages(1).unwrap();
        for k in 0..12 {
            for n in [2, 40] {
                let Some(run) = fails_cleanly(&pages, k, || pages.alloc_pages(n)) else {
                    continue;
                };
                if fails_cleanly(&pages, k, || pages.release_pages(run.addr, n)).is_none() {
                    pages.release_pages(run.addr, n).unwrap();
                }
            }
            let run = pages.alloc_pages(1).unwrap();
            fails_cleanly(&pages, k, || {
                pages.protect_pages(run.addr, 1, Protection::ExecuteRead, Protection::ReadWrite)
            });
            pages.release_pages(run.addr, 1).unwrap();
        }
        pages.release_pages(first.addr, 1).unwrap();
        pages.decommit_free_pages().unwrap();
        assert_eq!(checked(&pages).reserved_bytes, 0);
    }
}

#[test]
fn parked_pages_keep_their_addresses_until_released() {
    let config = PageAllocatorConfig {
        max_free_pages: 8,
        ..PageAllocatorConfig::default()
    };
    for pages in every_strategy(config) {
        let page = pages.page_size();
        let run = pages.alloc_pages(3).unwrap();
        let large = pages.alloc_pages(33).unwrap();
        pages.decommit_pages(run.addr, 3).unwrap();
        pages.decommit_pages(large.addr, 33).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.parked_bytes, 36 * page);
        assert_eq!(stats.used_bytes, 36 * page, "still held");
        assert_eq!(
            pages.vm().query(run.addr).unwrap().state,
            PageState::Reserved
        );
        assert_eq!(
            pages.protect_pages(run.addr, 1, Protection::ExecuteRead, Protection::ReadWrite),
            Err(Error::Vm(vm::Error::NotCommitted { addr: run.addr })),
            "parked pages refuse protect calls"
        );
        assert_eq!(
            pages.decommit_pages(large.addr, 2),
            Err(Error::PartialLargeRelease {
                base: large.addr,
                pages: 33
            })
        );
        let other = pages.alloc_pages(1).unwrap();
        assert_ne!(
            other.addr, run.addr,
            "parked pages are not handed out again"
        );

        pages.release_pages(run.addr, 3).unwrap();
        pages.release_pages(large.addr, 33).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.parked_bytes, 0);
        assert_eq!(stats.free_bytes, 0, "parked pages have no memory to keep");
        pages.release_pages(other.addr, 1).unwrap();
        pages.decommit_free_pages().unwrap();
        assert_eq!(checked(&pages).reserved_bytes, 0);
    }
}

#[test]
fn secondary_runs_span_contiguous_slots() {
    let config = PageAllocatorConfig {
        secondary_pages: 1,
        secondary_slot_size: 1024,
        ..PageAllocatorConfig::default()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let run = pages.alloc_pages(1).unwrap();
    let one = pages.alloc_secondary_bytes(run.addr, 100).unwrap();
    let three = pages.alloc_secondary_bytes(run.addr, 2100).unwrap();
    assert_eq!((one.size, three.size), (1024, 3072));
    assert_eq!(three.addr, one.addr + 1024, "first fit after the first run");
    assert_eq!(checked(&pages).secondary_slots_used, 4);
    assert_eq!(
        pages.alloc_secondary_bytes(run.addr, 1),
        Err(Error::SecondaryExhausted {
            segment: run.segment
        })
    );
    assert_eq!(
        pages.release_secondary(three.addr + 1024),
        Err(Error::NotASlot {
            addr: three.addr + 1024
        }),
        "the interior of a run is not a slot"
    );
    pages.release_secondary(three.addr).unwrap();
    assert_eq!(checked(&pages).secondary_slots_used, 1);
    assert_eq!(
        pages.alloc_secondary_bytes(run.addr, 0),
        Err(Error::ZeroPages)
    );
    assert_eq!(
        pages.alloc_secondary_bytes(run.addr, 4097),
        Err(Error::SecondaryTooLarge {
            bytes: 4097,
            area: 4096
        })
    );
}

#[test]
fn pages_with_secondary_come_from_a_segment_with_room() {
    let config = PageAllocatorConfig {
        secondary_pages: 1,
        secondary_slot_size: 1024,
        ..PageAllocatorConfig::default()
    };
    let pages = linux(WxStrategy::Protect, config);
    let (first, slot) = pages.alloc_pages_with_secondary(1, 3000).unwrap();
    assert_eq!(slot.segment, first.segment);
    // One slot is left in the first segment: a 2-slot request goes to a new segment, a
    // 1-slot request stays.
    let (second, slot2) = pages.alloc_pages_with_secondary(1, 2000).unwrap();
    assert_ne!(second.segment, first.segment);
    assert_eq!(slot2.segment, second.segment);
    let (third, _) = pages.alloc_pages_with_secondary(2, 1000).unwrap();
    assert_eq!(third.segment, first.segment);
    assert_eq!(
        pages.segment_list(first.addr),
        Some(SegmentList::Full),
        "slots exhausted"
    );
    let (large, large_slot) = pages.alloc_pages_with_secondary(40, 4096).unwrap();
    assert!(large.large);
    assert_eq!(large_slot.segment, large.addr);
    let stats = checked(&pages);
    assert_eq!(stats.secondary_slots_used, 3 + 2 + 1 + 4);
    assert_eq!(
        pages.alloc_pages_with_secondary(1, 5000),
        Err(Error::SecondaryTooLarge {
            bytes: 5000,
            area: 4096
        })
    );
    assert_eq!(checked(&pages), stats, "a refused request changes nothing");
}

/// A segment's code pages, all of them, are still a shared segment's to give, with or
/// without secondary data; one page more needs a large segment.
#[test]
fn a_request_for_every_code_page_of_a_segment_takes_a_segment() {
    let config = PageAllocatorConfig {
        secondary_pages: 1,
        ..PageAllocatorConfig::default()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let whole = config.code_pages();
    let (run, slot) = pages.alloc_pages_with_secondary(whole, 100).unwrap();
    assert!(!run.large);
    assert_eq!((run.addr, slot.segment), (run.segment, run.segment));
    let plain = pages.alloc_pages(whole).unwrap();
    assert!(!plain.large);
    assert_ne!(plain.segment, run.segment);
    let (beyond, _) = pages.alloc_pages_with_secondary(whole + 1, 100).unwrap();
    assert!(beyond.large);
    let stats = checked(&pages);
    assert_eq!(
        (stats.segments.full, stats.segments.large),
        (2, 1),
        "{stats:?}"
    );
}

/// The secondary area is committed with its first slot; if the OS refuses, the pages taken
/// for `alloc_pages_with_secondary` go back and nothing changes.
#[test]
fn a_refused_secondary_commit_gives_the_pages_back() {
    let config = PageAllocatorConfig {
        max_free_pages: 4,
        ..PageAllocatorConfig::default()
    };
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let pages = linux(strategy, config);
        let keep = pages.alloc_pages(1).unwrap();
        let spare = pages.alloc_pages(1).unwrap();
        pages.release_pages(spare.addr, 1).unwrap();
        let before = checked(&pages);
        pages.vm().os().fail_next(SysCall::Mprotect, libc::ENOMEM);
        let refused = pages.alloc_pages_with_secondary(1, 64);
        assert!(
            matches!(refused, Err(Error::Vm(_))),
            "{strategy}: {refused:?}"
        );
        assert_eq!(checked(&pages), before, "{strategy}: nothing changed");
        let (run, slot) = pages.alloc_pages_with_secondary(1, 64).unwrap();
        assert_eq!((run.addr, slot.segment), (spare.addr, keep.segment));
        let stats = checked(&pages);
        assert_eq!(stats.committed_bytes, 4 * pages.page_size(), "{strategy}");
        pages.release_secondary(slot.addr).unwrap();
        pages.release_pages(run.addr, 1).unwrap();
        pages.release_pages(keep.addr, 1).unwrap();
    }
}

/// The same with no free page to reuse: the page committed for the call is decommitted
/// again, not kept: kept, it would come back later as "what its holder left", which no
/// holder wrote.
#[test]
fn a_refused_secondary_commit_does_not_keep_the_fresh_page() {
    let config = PageAllocatorConfig {
        max_free_pages: 4,
        ..PageAllocatorConfig::default()
    };
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let pages = linux(strategy, config);
        let keep = pages.alloc_pages(1).unwrap();
        let before = checked(&pages);
        // The page's commit goes through; the secondary area's is refused.
        let os = pages.vm().os();
        let calls = os.syscalls();
        let probe = pages.alloc_pages(1).unwrap();
        let commit_calls = os.syscalls().since(&calls).total();
        pages.discard_pages(probe.addr, 1).unwrap();
        os.fail_after(commit_calls, libc::ENOMEM);
        let refused = pages.alloc_pages_with_secondary(1, 64);
        assert!(
            matches!(refused, Err(Error::Vm(_))),
            "{strategy}: {refused:?}"
        );
        let after = checked(&pages);
        assert_eq!(
            after.free_bytes, 0,
            "{strategy}: the fresh page is not kept"
        );
        assert_eq!(after.committed_bytes, before.committed_bytes, "{strategy}");
        let run = pages.alloc_pages(1).unwrap();
        assert!(run.fresh, "{strategy}: {run:?}");
        pages.release_pages(run.addr, 1).unwrap();
        pages.release_pages(keep.addr, 1).unwrap();
    }
}

/// A segment of 64 code pages (the most one bitmap word covers) taken whole by one request:
/// no page is left to mark decommitted.
#[test]
fn a_request_can_take_a_whole_64_page_segment() {
    let config = PageAllocatorConfig {
        segment_pages: 64,
        ..PageAllocatorConfig::without_secondary()
    };
    for pages in every_strategy(config) {
        let run = pages.alloc_pages(64).unwrap();
        assert_eq!(run.addr, run.segment);
        let stats = checked(&pages);
        assert_eq!(stats.segments.full, 1, "{stats:?}");
        pages.release_pages(run.addr, 64).unwrap();
        checked(&pages);
    }
}

#[test]
fn a_run_to_commit_is_the_window_with_the_most_free_pages_among_those_that_fit() {
    let config = PageAllocatorConfig {
        segment_pages: 8,
        max_free_pages: 5,
        ..PageAllocatorConfig::without_secondary()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let page = pages.page_size();
    let (a, b) = (pages.alloc_pages(8).unwrap(), pages.alloc_pages(8).unwrap());
    // a: free, decommitted, free, decommitted, then allocated: a run of 4 with 2 free.
    // b: 3 free, 4 decommitted, 1 allocated: a run of 7 whose first 4 have 3 free.
    // Kept free (5 in all, the cap) or discarded (decommitted whatever the cap).
    for addr in [a.addr, a.addr + 2 * page] {
        pages.release_pages(addr, 1).unwrap();
    }
    pages.release_pages(b.addr, 3).unwrap();
    for addr in [a.addr + page, a.addr + 3 * page] {
        pages.discard_pages(addr, 1).unwrap();
    }
    pages.discard_pages(b.addr + 3 * page, 4).unwrap();
    assert_eq!(checked(&pages).free_bytes, 5 * page);

    // a's run fits 4 pages most tightly and is weighed first, but b's first 4 pages need
    // one commit against a's two.
    let run = pages.alloc_pages(4).unwrap();
    assert_eq!((run.addr, run.fresh), (b.addr, true));
    assert_eq!(checked(&pages).free_bytes, 2 * page);
}

/// `segments` segments of 4 pages whose first two are decommitted (`D D A A`: D
/// decommitted, A allocated), filed first, and one more whose first page is free (`F D A
/// A`), filed last: two pages fit in each, with one page to commit only in the last.
/// Returns the allocator and the last segment.
fn a_better_fit_filed_last(segments: usize) -> (PageAllocator<SimOs>, usize) {
    let config = PageAllocatorConfig {
        segment_pages: 4,
        max_free_pages: 1,
        ..PageAllocatorConfig::without_secondary()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let page = pages.page_size();
    let runs: Vec<_> = (0..=segments)
        .map(|_| pages.alloc_pages(4).unwrap())
        .collect();
    let (last, rest) = runs.split_last().unwrap();
    pages.release_pages(last.addr, 1).unwrap();
    for run in rest {
        pages.release_pages(run.addr, 2).unwrap();
    }
    pages.release_pages(last.addr + page, 1).unwrap();
    checked(&pages);
    (pages, last.segment)
}

#[test]
fn a_run_to_commit_is_looked_for_in_at_most_64_segments() {
    let (pages, last) = a_better_fit_filed_last(10);
    let run = pages.alloc_pages(2).unwrap();
    assert_eq!(run.segment, last, "the window with a free page");

    // The search weighs 64 segments and stops, so a request costs the same however many
    // there are: the 66th, with the better window, is not weighed.
    let (pages, last) = a_better_fit_filed_last(65);
    let run = pages.alloc_pages(2).unwrap();
    assert_ne!(run.segment, last);
    assert_eq!(
        checked(&pages).free_bytes,
        pages.page_size(),
        "its free page stays"
    );
}

/// Of equally short free runs the oldest segment's is taken, whatever the addresses: in a
/// code range a segment made later can lie below an older one (here the newer segment
/// takes the span a released region left at the range's start).
#[test]
fn of_equal_free_runs_the_oldest_segments_is_taken_wherever_it_lies() {
    let config = PageAllocatorConfig {
        segment_pages: 4,
        max_free_pages: 8,
        ..PageAllocatorConfig::without_secondary()
    };
    let range = vm::CodeRangeConfig::new(1 << 20);
    let vm =
        VirtualAlloc::with_code_range(SimOs::linux(), Some(WxStrategy::DualMap), range).unwrap();
    let pages = PageAllocator::new(vm, config).unwrap();
    let page = pages.page_size();
    let placeholder = pages.vm().reserve(0x10000).unwrap();
    let older = pages.alloc_pages(4).unwrap();
    pages.vm().release(placeholder.base).unwrap();
    let newer = pages.alloc_pages(4).unwrap();
    assert!(
        newer.segment < older.segment,
        "the newer segment lies lower"
    );
    for run in [&older, &newer] {
        pages.release_pages(run.addr + page, 2).unwrap();
    }
    assert_eq!(checked(&pages).free_bytes, 4 * page);
    let taken = pages.alloc_pages(2).unwrap();
    assert_eq!(
        (taken.segment, taken.addr),
        (older.segment, older.addr + page)
    );
    let next = pages.alloc_pages(2).unwrap();
    assert_eq!(
        (next.segment, next.addr),
        (newer.segment, newer.addr + page)
    );
    checked(&pages);
}

/// Three segments of 4 pages, each with a run of 4 taken, and a cap of 2 free pages, which
/// the first page of the first two segments, released in turn, fills.
fn a_full_cap_of_two_segments_pages() -> (PageAllocator<SimOs>, [usize; 3]) {
    let config = PageAllocatorConfig {
        segment_pages: 4,
        max_free_pages: 2,
        ..PageAllocatorConfig::without_secondary()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let [a, b, c] = [(); 3].map(|()| pages.alloc_pages(4).unwrap().addr);
    pages.release_pages(a, 1).unwrap();
    pages.release_pages(b, 1).unwrap();
    (pages, [a, b, c])
}

fn committed(pages: &PageAllocator<SimOs>, addr: usize) -> bool {
    matches!(
        pages.vm().query(addr).unwrap().state,
        PageState::Committed(_)
    )
}

#[test]
fn over_the_cap_the_free_pages_kept_longest_ago_are_decommitted_first() {
    let (pages, [a, b, c]) = a_full_cap_of_two_segments_pages();
    let page = pages.page_size();
    // Two more pages over a full cap: a's and b's free pages, kept before, make the room,
    // and the pages just released stay committed.
    pages.release_pages(c, 2).unwrap();
    assert!(!committed(&pages, a) && !committed(&pages, b));
    assert!(committed(&pages, c) && committed(&pages, c + page));
    assert_eq!(checked(&pages).free_bytes, 2 * page);
    // Only the releasing segment's own free pages are left: it decommits its own excess.
    pages.release_pages(c + 2 * page, 1).unwrap();
    assert!(committed(&pages, c) && committed(&pages, c + page));
    assert!(!committed(&pages, c + 2 * page));
    assert_eq!(checked(&pages).free_bytes, 2 * page);
}

/// Room is made a free run at a time, and no more runs are decommitted than the release
/// needs, even where the stale segment has more.
#[test]
fn stale_free_runs_are_decommitted_only_as_far_as_the_release_needs() {
    let config = PageAllocatorConfig {
        segment_pages: 4,
        max_free_pages: 2,
        ..PageAllocatorConfig::without_secondary()
    };
    let pages = linux(WxStrategy::DualMap, config);
    let page = pages.page_size();
    let [a, c] = [(); 2].map(|()| pages.alloc_pages(4).unwrap().addr);
    pages.release_pages(a, 1).unwrap();
    pages.release_pages(a + 2 * page, 1).unwrap();
    pages.release_pages(c, 1).unwrap();
    assert!(!committed(&pages, a), "the first of a's runs made the room");
    assert!(committed(&pages, a + 2 * page), "the second was not needed");
    assert!(committed(&pages, c));
    assert_eq!(checked(&pages).free_bytes, 2 * page);
}

#[test]
fn a_refused_decommit_of_stale_pages_leaves_the_release_its_own_room() {
    let (pages, [a, b, c]) = a_full_cap_of_two_segments_pages();
    let page = pages.page_size();
    assert_eq!(checked(&pages).refused_stale_decommits, 0);
    pages.vm().os().fail_after(0, libc::ENOMEM);
    pages.release_pages(c, 2).unwrap();
    pages.vm().os().clear_failures();
    assert!(
        committed(&pages, a) && committed(&pages, b),
        "a's decommit was refused"
    );
    assert!(!committed(&pages, c) && !committed(&pages, c + page));
    let stats = checked(&pages);
    assert_eq!(stats.free_bytes, 2 * page);
    assert_eq!(stats.refused_stale_decommits, 1, "the refusal is counted");
}

/// The check asks the OS layer about every page of every segment, a run of same-state
/// pages at a time: a page committed or decommitted behind the allocator's back is found
/// wherever it lies in a run, in a segment's code pages, its secondary pages or a large
/// segment.
#[test]
fn the_check_finds_a_page_whose_state_the_books_do_not_give() {
    let pages = linux(WxStrategy::DualMap, PageAllocatorConfig::default());
    let page = pages.page_size();
    let run = pages.alloc_pages(3).unwrap();
    let config = *pages.config();
    let large = pages.alloc_pages(config.segment_pages + 2).unwrap();
    assert!(large.large);
    checked(&pages);

    let behind_the_back = [
        (run.addr + 2 * page, true),
        (run.addr, true),
        (run.addr + 3 * page, false),
        (run.segment + (config.segment_pages - 1) * page, false),
        (large.addr + (large.pages - 1) * page, true),
    ];
    for (addr, decommit) in behind_the_back {
        let changed = if decommit {
            pages.vm().decommit(addr, page)
        } else {
            pages.vm().commit(addr, page, Protection::ReadWrite)
        };
        changed.unwrap();
        let err = pages.check_invariants().unwrap_err();
        assert!(err.contains(&format!("{addr:#x}")), "{addr:#x}: {err}");
        let undone = if decommit {
            pages.vm().commit(addr, page, Protection::ReadWrite)
        } else {
            pages.vm().decommit(addr, page)
        };
        undone.unwrap();
        checked(&pages);
    }
}

/// An empty segment the OS refuses to take back stays, on the decommitted list and filed by
/// its room, so the next request it fits reuses it rather than reserving another; emptied
/// again with the OS willing, it goes. (Linux: the simulated MAP_JIT region hands its
/// spans back without a system call that could be refused.)
#[test]
fn a_segment_the_os_refuses_to_take_back_is_reused() {
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let pages = linux(strategy, PageAllocatorConfig::default());
        let run = pages.alloc_pages(2).unwrap();
        let reserved = checked(&pages).reserved_bytes;
        pages.vm().os().fail_next(SysCall::Munmap, libc::EINVAL);
        pages.release_pages(run.addr, 2).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.segments_released, 0, "refused");
        assert_eq!((stats.reserved_bytes, stats.committed_bytes), (reserved, 0));

        let again = pages.alloc_pages(4).unwrap();
        assert_eq!(
            checked(&pages).reserved_bytes,
            reserved,
            "the kept segment, not a new one"
        );
        pages.release_pages(again.addr, 4).unwrap();
        let stats = checked(&pages);
        assert_eq!(stats.segments_released, 1);
        assert_eq!(pages.vm().os().mapped_pages(), 0);
    }
}
