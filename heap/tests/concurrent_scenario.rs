//! The seeds' scenario as a test: a background thread in permanent write mode compiles 48
//! functions of different sizes, several per page, while the main thread keeps calling the
//! finalized ones; every result is checked; three runs in a row, under every strategy that
//! keeps W^X without racing (`Protect` races by design: see `protect_race.rs`).

mod common;

use std::collections::BTreeSet;

use codeheap::{Heap, HeapConfig, Os, SimOs, SimRules, WxStrategy};
use common::scenario;

const FUNCTIONS: usize = 48;

fn three_runs<O: Os>(label: &str, heap: &Heap<O>) {
    for run in 0..3 {
        let outcome = scenario::run(heap, FUNCTIONS, 3);
        assert_eq!(outcome.wrong, 0, "{label} run {run}: wrong results");
        assert_eq!(outcome.faults, 0, "{label} run {run}: faults");
        assert!(outcome.calls >= 3 * FUNCTIONS as u64, "{label} run {run}");
        assert_eq!(outcome.stats.live_blocks, FUNCTIONS);
        let pages_with_code: usize = outcome.stats.buckets.iter().map(|b| b.pages).sum();
        assert!(
            pages_with_code < FUNCTIONS / 2,
            "{label}: functions share pages"
        );
        assert_eq!(
            outcome.stats.protect_calls_made, 0,
            "{label}: no protection ever changes"
        );
        assert_eq!(heap.stats().live_blocks, 0);
    }
}

#[test]
fn sizes_put_several_functions_on_each_page() {
    let sizes: BTreeSet<usize> = (0..FUNCTIONS)
        .map(|i| scenario::function_size(i, 4096))
        .collect();
    assert!(sizes.len() >= 9, "different sizes");
    assert!(sizes.iter().filter(|&&s| s <= 1024).count() >= 6);
}

#[test]
fn simulated_apple_map_jit() {
    let heap = Heap::with_config(SimOs::apple(), HeapConfig::default()).unwrap();
    assert_eq!(heap.strategy(), WxStrategy::MapJit);
    three_runs("simulated apple map-jit", &heap);
}

#[test]
fn simulated_linux_aarch64_dual_map() {
    let os = SimOs::new(SimRules::linux_aarch64());
    let heap = Heap::with_config(os, HeapConfig::with_strategy(WxStrategy::DualMap)).unwrap();
    three_runs("simulated linux-aarch64 dual-map", &heap);
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn native_dual_map() {
    three_runs(
        "native dual-map",
        &Heap::with_strategy(WxStrategy::DualMap).unwrap(),
    );
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn native_rwx() {
    three_runs("native rwx", &Heap::with_strategy(WxStrategy::Rwx).unwrap());
}
