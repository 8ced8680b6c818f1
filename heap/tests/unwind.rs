//! Unwinding through JIT frames, for real: a JIT function with a frame calls back into
//! Rust, the callback panics, and `catch_unwind` around the call into JIT code catches it;
//! without registered unwind information the same program aborts. Backtraces taken inside
//! the callback reach past the JIT frame, and a function placed where a freed one was
//! unwinds with its own frame description, not the old one. Natively on x86-64 and under
//! qemu on aarch64.
#![cfg(all(target_os = "linux", not(miri)))]

mod common;

use std::backtrace::Backtrace;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::time::Duration;

use codeheap::{Block, Heap, NativeOs, WxStrategy};
use codeheap_test_support::child;
use common::jit_calls::{Layout, calls_back};

extern "C-unwind" fn panicking_callback() {
    panic!("a panic from inside JIT code");
}

static BACKTRACE: Mutex<String> = Mutex::new(String::new());

extern "C-unwind" fn backtrace_callback() {
    *BACKTRACE.lock().unwrap() = Backtrace::force_capture().to_string();
}

fn strategies() -> [WxStrategy; 2] {
    [WxStrategy::DualMap, WxStrategy::Protect]
}

/// A block holding code of `layout` that calls `callback`; with its unwind entry
/// registered if `unwind`.
fn emit(
    heap: &Heap<NativeOs>,
    layout: Layout,
    callback: extern "C-unwind" fn(),
    unwind: bool,
) -> Block {
    let (code, frame) = calls_back(heap.arch(), layout, callback as usize);
    let mut block = if unwind {
        heap.alloc_with_unwind(code.len(), frame).unwrap()
    } else {
        heap.alloc(code.len()).unwrap()
    };
    heap.write(&mut block, |w| w.write(0, &code)).unwrap();
    block
}

fn jit_function(heap: &Heap<NativeOs>, block: &Block) -> extern "C-unwind" fn() {
    // SAFETY: the block holds a complete `extern "C-unwind" fn()`, and outlives the calls.
    unsafe { heap.function(block) }.unwrap()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn a_panic_crosses_a_registered_jit_frame() {
    for strategy in strategies() {
        let heap = Heap::with_strategy(strategy).unwrap();
        for layout in [Layout::FramePointer, Layout::StackOnly] {
            let block = emit(&heap, layout, panicking_callback, true);
            let entry = heap.unwind_entry(&block).expect("registered at finalize");
            assert!(entry.covers(block.addr()) && entry.covers(block.addr() + block.size() - 1));
            let function = jit_function(&heap, &block);
            let caught =
                std::panic::catch_unwind(|| function()).expect_err("the panic reaches here");
            assert_eq!(
                panic_message(caught),
                "a panic from inside JIT code",
                "{strategy} {layout:?}"
            );
            heap.free(block).unwrap();
        }
    }
}

/// The same panic, through functions whose entries were registered other ways: emitted from
/// a finished buffer (`emit_code_with_unwind`), truncated in their session from far more
/// room, and shrunk after finalizing (the entry deregistered, rewritten for the shorter
/// function and registered again).
#[test]
fn a_panic_crosses_frames_emitted_from_a_buffer_truncated_or_shrunk() {
    for strategy in strategies() {
        let heap = Heap::with_strategy(strategy).unwrap();
        for layout in [Layout::FramePointer, Layout::StackOnly] {
            let callback: extern "C-unwind" fn() = panicking_callback;
            let (code, frame) = calls_back(heap.arch(), layout, callback as usize);
            let from_buffer = heap.emit_code_with_unwind(&code, frame.clone()).unwrap();
            let (truncated, ()) = heap
                .emit_with_unwind(code.len() + 3000, frame.clone(), |w| {
                    w.write(0, &code)?;
                    w.truncate(code.len())
                })
                .unwrap();
            let mut shrunk = heap.alloc_with_unwind(code.len() + 500, frame).unwrap();
            heap.write(&mut shrunk, |w| w.write(0, &code)).unwrap();
            heap.shrink(&mut shrunk, code.len()).unwrap();
            for (how, block) in [
                ("from a buffer", &from_buffer),
                ("truncated", &truncated),
                ("shrunk", &shrunk),
            ] {
                let entry = heap.unwind_entry(block).expect("registered");
                assert_eq!((entry.pc, entry.len), (block.addr(), code.len()), "{how}");
                let function = jit_function(&heap, block);
                let caught =
                    std::panic::catch_unwind(|| function()).expect_err("the panic reaches here");
                assert_eq!(
                    panic_message(caught),
                    "a panic from inside JIT code",
                    "{strategy} {layout:?} {how}"
                );
            }
            for block in [from_buffer, truncated, shrunk] {
                heap.free(block).unwrap();
            }
        }
    }
}

#[inline(never)]
fn enter_jit_code_from_a_named_frame(function: extern "C-unwind" fn()) {
    function();
    std::hint::black_box(());
}

fn backtrace_through(heap: &Heap<NativeOs>, unwind: bool) -> String {
    let block = emit(heap, Layout::FramePointer, backtrace_callback, unwind);
    enter_jit_code_from_a_named_frame(jit_function(heap, &block));
    heap.free(block).unwrap();
    std::mem::take(&mut *BACKTRACE.lock().unwrap())
}

#[test]
fn a_backtrace_taken_in_a_callback_lists_the_frames_beyond_the_jit_frame() {
    let heap = Heap::with_strategy(WxStrategy::DualMap).unwrap();
    let with = backtrace_through(&heap, true);
    assert!(with.contains("backtrace_callback"), "{with}");
    assert!(
        with.contains("enter_jit_code_from_a_named_frame"),
        "the walk goes past the JIT frame:\n{with}"
    );
    // Without an entry the unwinder stops at the JIT frame.
    let without = backtrace_through(&heap, false);
    assert!(without.contains("backtrace_callback"), "{without}");
    assert!(
        !without.contains("enter_jit_code_from_a_named_frame"),
        "{without}"
    );
}

#[test]
fn a_function_where_a_freed_one_was_unwinds_with_its_own_frame() {
    for strategy in strategies() {
        let heap = Heap::with_strategy(strategy).unwrap();
        let first = emit(&heap, Layout::FramePointer, panicking_callback, true);
        let addr = first.addr();
        let old = heap.unwind_entry(&first).unwrap();
        heap.free(first).unwrap();

        let second = emit(&heap, Layout::StackOnly, panicking_callback, true);
        assert_eq!(
            second.addr(),
            addr,
            "{strategy}: the new function takes the freed place"
        );
        let new = heap.unwind_entry(&second).unwrap();
        assert_eq!(new.pc, addr);
        assert_eq!(new.addr, old.addr, "the freed slot is reused");
        // With the old frame-pointer rows the unwinder would take the caller's rbp/x29 for
        // the CFA and could not get back to this frame.
        let function = jit_function(&heap, &second);
        let caught = std::panic::catch_unwind(|| function());
        assert_eq!(
            panic_message(caught.unwrap_err()),
            "a panic from inside JIT code"
        );
        heap.free(second).unwrap();
    }
}

const UNREGISTERED: &str = "a_panic_across_an_unregistered_jit_frame_aborts";

#[test]
fn a_panic_across_an_unregistered_jit_frame_aborts() {
    if child::role().as_deref() == Some("unregistered") {
        let heap = Heap::with_strategy(WxStrategy::DualMap).unwrap();
        let block = emit(&heap, Layout::FramePointer, panicking_callback, false);
        let function = jit_function(&heap, &block);
        let _ = std::panic::catch_unwind(|| function());
        return; // not reached: the unwinder finds no frame information and the panic aborts
    }
    let status = child::run(UNREGISTERED, "unregistered", Duration::from_secs(60))
        .expect("the child ends by itself");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "ended with {status:?}"
    );
}
