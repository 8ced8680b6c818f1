//! Loom model of the page allocator: two threads allocate pages, flip them executable (a
//! real `mprotect` under `Protect`, made outside the allocator's lock), take and give back a
//! secondary slot and release everything, sharing one segment; a large allocation and its
//! release race with them. In every interleaving each call succeeds, the segment is made
//! once and released once, and the allocator's invariants hold at the end.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! codeheap-page-allocator --test loom --release`; see `docs/verification.md`.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};

use codeheap_page_allocator::{PageAllocator, PageAllocatorConfig};
use codeheap_virtual_alloc::sim::SimOs;
use codeheap_virtual_alloc::{PageState, Protection, VirtualAlloc, WxStrategy};
use loom::sync::Arc;
use loom::thread;

/// Preemptions explored unless `LOOM_MAX_PREEMPTIONS` says otherwise. Both threads take the
/// same four locks (allocator, registry, region, simulator) many times, so a complete
/// exploration does not end in reasonable time; 4 runs in seconds, 5 in about twenty.
const PREEMPTIONS: usize = 4;

fn explore(model: impl Fn() + Send + Sync + 'static) -> usize {
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&executions);
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.preemption_bound = builder.preemption_bound.or(Some(PREEMPTIONS));
    builder.check(move || {
        seen.fetch_add(1, Ordering::Relaxed);
        model();
    });
    let executions = executions.load(Ordering::Relaxed);
    println!("{executions} interleavings");
    assert!(executions > 1, "loom explored interleavings");
    executions
}

/// One thread's life: a page, made executable, a slot, everything given back.
fn use_a_page(pages: &PageAllocator<SimOs>) -> usize {
    let run = pages.alloc_pages(1).unwrap();
    pages
        .protect_pages(run.addr, 1, Protection::ExecuteRead, Protection::ReadWrite)
        .unwrap();
    let info = pages.vm().query(run.addr).unwrap();
    assert_eq!(info.state, PageState::Committed(Protection::ExecuteRead));
    let slot = pages.alloc_secondary(run.addr).unwrap();
    assert_eq!(slot.segment, run.segment);
    pages.release_secondary(slot.addr).unwrap();
    pages.release_pages(run.addr, 1).unwrap();
    run.segment
}

fn pages_and_slots_race(strategy: WxStrategy) {
    let vm = VirtualAlloc::with_strategy(SimOs::linux(), strategy).unwrap();
    let config = PageAllocatorConfig {
        segment_pages: 4,
        secondary_pages: 1,
        ..PageAllocatorConfig::default()
    };
    let pages = Arc::new(PageAllocator::new(vm, config).unwrap());
    let other = {
        let pages = Arc::clone(&pages);
        thread::spawn(move || {
            let segment = use_a_page(&pages);
            let large = pages.alloc_pages(5).unwrap();
            assert!(large.large);
            pages.release_pages(large.addr, 5).unwrap();
            segment
        })
    };
    use_a_page(&pages);
    other.join().unwrap();
    pages.check_invariants().unwrap();
    let stats = pages.stats();
    assert_eq!(stats.used_bytes, 0);
    assert_eq!(stats.segments_created, stats.segments_released);
    assert_eq!(pages.vm().stats().regions, 0, "every segment went back");
}

#[test]
fn pages_and_slots_race_under_protect() {
    explore(|| pages_and_slots_race(WxStrategy::Protect));
}

#[test]
fn pages_and_slots_race_under_dual_map() {
    explore(|| pages_and_slots_race(WxStrategy::DualMap));
}
