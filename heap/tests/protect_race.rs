//! The race the seeds describe, made visible: under `Protect`, a writer flipping a shared
//! page to read-write while an executor runs code on it crashes the executor (SIGSEGV on
//! Linux, SIGBUS on macOS); the same workload under `DualMap` finishes clean. Each workload
//! runs in a child process, so the crash is a result the parent asserts.
#![cfg(all(target_os = "linux", not(miri)))]

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use codeheap::{Heap, WxStrategy};
use codeheap_test_support::child;

/// How long the workload runs if nothing crashes.
const WORKLOAD: Duration = Duration::from_secs(3);

/// The workload: two functions on one page; one thread patches the first over and over
/// while another keeps calling the second.
fn workload(strategy: WxStrategy) {
    let heap = Heap::with_strategy(strategy).unwrap();
    let mut patched = heap.alloc(64).unwrap();
    let mut called = heap.alloc(64).unwrap();
    let page = heap.page_size();
    assert_eq!(
        patched.addr() / page,
        called.addr() / page,
        "the two share a page"
    );
    for (block, value) in [(&mut patched, 1), (&mut called, 2)] {
        let code = heap.arch().encode_return_u32(value);
        heap.write(block, |w| w.write(0, code.as_bytes())).unwrap();
    }
    // SAFETY: `called` holds `extern "C" fn() -> u32` and outlives the threads below.
    let run: extern "C" fn() -> u32 = unsafe { heap.function(&called) }.unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut value = 0;
            while !stop.load(Ordering::Relaxed) {
                value += 1;
                let code = heap.arch().encode_return_u32(value);
                heap.write(&mut patched, |w| w.write(0, code.as_bytes()))
                    .unwrap();
            }
        });
        let started = Instant::now();
        while started.elapsed() < WORKLOAD {
            assert_eq!(run(), 2);
        }
        stop.store(true, Ordering::Relaxed);
    });
}

const TEST: &str = "protect_crashes_the_executor_and_dual_map_does_not";

#[test]
fn protect_crashes_the_executor_and_dual_map_does_not() {
    // In a child, play the workload asked for; the parent below asserts how it ended.
    match child::role().as_deref() {
        Some("protect") => return workload(WxStrategy::Protect),
        Some("dual-map") => return workload(WxStrategy::DualMap),
        _ => {}
    }
    let limit = WORKLOAD * 10;
    let protect = child::run(TEST, "protect", limit).expect("the Protect child ends");
    let signal = protect.signal();
    assert!(
        matches!(signal, Some(libc::SIGSEGV) | Some(libc::SIGBUS)),
        "Protect should crash with SIGSEGV or SIGBUS, ended with {protect:?}"
    );

    let dual = child::run(TEST, "dual-map", limit).expect("the DualMap child ends");
    assert!(
        dual.success(),
        "DualMap should finish clean, ended with {dual:?}"
    );
}
