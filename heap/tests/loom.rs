//! Loom models of the heap's threads, over the real crates on the simulated OS: every lock
//! the heap, the page allocator, the OS layer and the simulator take is a loom lock (the
//! `sync` shim), and each thread's write mode is a loom thread-local, so loom explores
//! every interleaving of their critical sections.
//!
//! * A writer emits a function onto a page while an executor runs its neighbour. Under
//!   `Protect` loom finds the interleaving where the page is read-write at the moment the
//!   executor fetches an instruction (the seeds' SIGBUS); under `MapJit` and `DualMap` every
//!   interleaving runs clean.
//! * The same for a free of the neighbouring block, which fills it with traps.
//! * The same for a live patch of the very function the executor runs: it runs the old code
//!   or the new, and under `Protect` faults.
//! * Write-scope nesting and permanent write mode on one thread do not leak into the other,
//!   which keeps running code.
//!
//! The executor runs code as hardware does: through an entry point it obtained earlier, with
//! nothing checked but the page table and its own mode (`Os::call` on the simulator), so a
//! failure there is a fault, not a refused check.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p codeheap
//! --test loom --release`; see `docs/verification.md`.
#![cfg(loom)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use codeheap::vm::{Error as VmError, sim::FaultKind};
use codeheap::{
    Block, Heap, HeapConfig, Os, SimOs, SimRules, ThreadMode, WriteScope, WxStrategy, current_mode,
    enter_permanent_write_mode, leave_permanent_write_mode,
};
use loom::sync::Arc;
use loom::thread;

/// Preemptions explored in models of three threads unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise: 3 covers every interleaving that needs at most three forced switches (seconds);
/// each more multiplies the time by about ten. Two-thread models are explored completely.
const THREE_THREAD_PREEMPTIONS: usize = 3;

/// A model checker with room for the heap's many lock operations per execution.
fn builder(threads: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if threads > 2 && builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(THREE_THREAD_PREEMPTIONS);
    }
    builder
}

/// What exploring a model came to: how many executions loom ran, and the message of the
/// panic that ended the exploration, if one did.
struct Explored {
    executions: usize,
    failure: Option<String>,
}

/// Runs `model`, which runs `threads` threads, under loom, catching the panic of a failing
/// execution.
fn explore(threads: usize, model: impl Fn() + Send + Sync + 'static) -> Explored {
    quiet_expected_panics();
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&executions);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        builder(threads).check(move || {
            seen.fetch_add(1, Ordering::Relaxed);
            model();
        });
    }));
    let failure = outcome.err().map(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    });
    Explored {
        executions: executions.load(Ordering::Relaxed),
        failure,
    }
}

fn heap(strategy: WxStrategy) -> Heap<SimOs> {
    let (os, config) = match strategy {
        WxStrategy::MapJit => (SimOs::apple(), HeapConfig::default()),
        // aarch64 Linux: code must be flushed, so a missing flush would show too.
        other => (
            SimOs::new(SimRules::linux_aarch64()),
            HeapConfig::with_strategy(other),
        ),
    };
    let heap = Heap::with_config(os, config).expect("a simulated heap");
    assert_eq!(heap.strategy(), strategy);
    heap
}

fn emit(heap: &Heap<SimOs>, block: &mut Block, value: u32) {
    let code = heap.arch().encode_return_u32(value);
    heap.write(block, |w| w.write(0, code.as_bytes()))
        .expect("writing a block");
}

/// Runs the code at `entry` as a CPU would: only the page table and the thread's mode are
/// checked, at every instruction fetch.
fn run(heap: &Heap<SimOs>, entry: usize) -> Result<u32, VmError> {
    // SAFETY: the simulator decodes the code from its own memory; nothing of the process is
    // touched or run.
    unsafe { heap.vm().os().call(entry) }
}

/// Two blocks on one page; the second holds `return 2` and is finalized.
fn neighbours(heap: &Heap<SimOs>) -> (Block, Block, usize) {
    let first = heap.alloc(100).unwrap();
    let mut second = heap.alloc(100).unwrap();
    let page = heap.page_size();
    assert_eq!(first.addr() / page, second.addr() / page, "one page");
    emit(heap, &mut second, 2);
    let entry = heap.entry_point(&second).unwrap();
    (first, second, entry)
}

const EXECUTOR_FAULTED: &str = "the executor faulted";
const UNWINDING: &str = "unwinding out of a write scope on purpose";

/// Keeps the panic the write-mode model raises on purpose (once per interleaving) out of
/// the output; every other panic is reported as usual.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>();
            if message.is_none_or(|m| m != UNWINDING) {
                report(info);
            }
        }));
    });
}

/// A background compiler (permanent write mode) writes `first` while this thread runs
/// `second`, on the same page.
fn writer_beside_executor(strategy: WxStrategy) {
    let heap = Arc::new(heap(strategy));
    let (mut first, second, entry) = neighbours(&heap);
    let writer = {
        let heap = Arc::clone(&heap);
        thread::spawn(move || {
            enter_permanent_write_mode();
            emit(&heap, &mut first, 1);
            leave_permanent_write_mode();
            first
        })
    };
    let result = run(&heap, entry);
    if let Err(err) = &result {
        panic!("{EXECUTOR_FAULTED} running its function: {err:?}");
    }
    assert_eq!(result, Ok(2));
    let first = writer.join().unwrap();
    assert_eq!(run(&heap, heap.entry_point(&first).unwrap()), Ok(1));
    heap.free(first).unwrap();
    heap.free(second).unwrap();
    heap.check_invariants().unwrap();
}

/// Another thread frees `first` (filling it with traps) while this thread runs `second`.
fn free_beside_executor(strategy: WxStrategy) {
    let heap = Arc::new(heap(strategy));
    let (mut first, second, entry) = neighbours(&heap);
    emit(&heap, &mut first, 1);
    let freed_at = first.addr();
    let freer = {
        let heap = Arc::clone(&heap);
        thread::spawn(move || heap.free(first).unwrap())
    };
    let result = run(&heap, entry);
    if let Err(err) = &result {
        panic!("{EXECUTOR_FAULTED} running its function: {err:?}");
    }
    assert_eq!(result, Ok(2));
    freer.join().unwrap();
    // The freed block holds traps: a stale call traps instead of running old code.
    let stale = run(&heap, freed_at).unwrap_err();
    assert!(
        matches!(stale, VmError::Fault(fault) if fault.kind == FaultKind::Trap),
        "{stale:?}"
    );
    assert_eq!(heap.find(freed_at), None);
    heap.free(second).unwrap();
    heap.check_invariants().unwrap();
}

/// Another thread patches the function this thread is running (its `movz`, `return 2`
/// becoming `return 3`): the executor runs one or the other, and the new one once the patch
/// is done.
fn patch_beside_executor(strategy: WxStrategy) {
    let heap = Arc::new(heap(strategy));
    let (first, second, entry) = neighbours(&heap);
    let patcher = {
        let heap = Arc::clone(&heap);
        thread::spawn(move || {
            let code = heap.arch().encode_return_u32(3);
            heap.patch(&second, 0, &code.as_bytes()[..4]).unwrap();
            second
        })
    };
    let result = run(&heap, entry);
    if let Err(err) = &result {
        panic!("{EXECUTOR_FAULTED} running its function: {err:?}");
    }
    assert!(matches!(result, Ok(2 | 3)), "{result:?}");
    let second = patcher.join().unwrap();
    assert_eq!(run(&heap, entry), Ok(3));
    heap.free(first).unwrap();
    heap.free(second).unwrap();
    heap.check_invariants().unwrap();
}

/// The Protect model must fail, and because the executor faulted: a protection violation
/// on an instruction fetch, not a refused check or a bound loom ran out of.
fn assert_protect_faults(label: &str, explored: Explored) {
    let message = explored.failure.unwrap_or_else(|| {
        panic!("{label}: loom must find the interleaving where the executor faults")
    });
    assert!(
        message.contains(EXECUTOR_FAULTED) && message.contains("ProtectionViolation(Execute)"),
        "{label}: the model failed for another reason: {message}"
    );
    println!(
        "{label}: the executor faults in interleaving {}: {message}",
        explored.executions
    );
}

fn assert_passes(label: &str, explored: Explored) {
    if let Some(message) = explored.failure {
        panic!(
            "{label}: interleaving {} failed: {message}",
            explored.executions
        );
    }
    assert!(
        explored.executions > 1,
        "{label}: loom explored interleavings"
    );
    println!("{label}: {} interleavings, all clean", explored.executions);
}

#[test]
fn writer_beside_executor_faults_under_protect() {
    assert_protect_faults(
        "writer beside executor, Protect",
        explore(2, || writer_beside_executor(WxStrategy::Protect)),
    );
}

#[test]
fn writer_beside_executor_is_clean_under_map_jit() {
    assert_passes(
        "writer beside executor, MapJit",
        explore(2, || writer_beside_executor(WxStrategy::MapJit)),
    );
}

#[test]
fn writer_beside_executor_is_clean_under_dual_map() {
    assert_passes(
        "writer beside executor, DualMap",
        explore(2, || writer_beside_executor(WxStrategy::DualMap)),
    );
}

#[test]
fn free_beside_executor_faults_under_protect() {
    assert_protect_faults(
        "free beside executor, Protect",
        explore(2, || free_beside_executor(WxStrategy::Protect)),
    );
}

#[test]
fn free_beside_executor_is_clean_under_map_jit() {
    assert_passes(
        "free beside executor, MapJit",
        explore(2, || free_beside_executor(WxStrategy::MapJit)),
    );
}

#[test]
fn free_beside_executor_is_clean_under_dual_map() {
    assert_passes(
        "free beside executor, DualMap",
        explore(2, || free_beside_executor(WxStrategy::DualMap)),
    );
}

#[test]
fn patch_beside_executor_faults_under_protect() {
    assert_protect_faults(
        "patch beside executor, Protect",
        explore(2, || patch_beside_executor(WxStrategy::Protect)),
    );
}

#[test]
fn patch_beside_executor_is_clean_under_map_jit() {
    assert_passes(
        "patch beside executor, MapJit",
        explore(2, || patch_beside_executor(WxStrategy::MapJit)),
    );
}

#[test]
fn patch_beside_executor_is_clean_under_dual_map() {
    assert_passes(
        "patch beside executor, DualMap",
        explore(2, || patch_beside_executor(WxStrategy::DualMap)),
    );
}

/// One thread nests write scopes inside permanent write mode (and unwinds out of one),
/// writing through the OS layer; the other keeps running code. Under `MapJit` a mode leaking
/// from one thread to the other would fault one of them.
fn write_modes_stay_on_their_thread() {
    let heap = Arc::new(heap(WxStrategy::MapJit));
    let (first, second, entry) = neighbours(&heap);
    let compiler = {
        let heap = Arc::clone(&heap);
        thread::spawn(move || {
            assert_eq!(
                current_mode(),
                ThreadMode::Execute,
                "threads start executing"
            );
            enter_permanent_write_mode();
            {
                let _outer = WriteScope::enter();
                {
                    let _inner = WriteScope::enter();
                    heap.vm().fill(first.addr(), 4, &[0]).unwrap();
                }
                assert_eq!(current_mode(), ThreadMode::Write);
            }
            let unwound = catch_unwind(|| {
                let _scope = WriteScope::enter();
                panic!("{UNWINDING}");
            });
            assert!(unwound.is_err());
            assert_eq!(current_mode(), ThreadMode::Write, "still permanent");
            // A thread in write mode gets no entry point (pitfall 5)...
            assert!(heap.entry_point(&second).is_err());
            // ...and faults if it runs code anyway.
            assert_fault(run(&heap, entry), FaultKind::ExecuteInWriteMode);
            leave_permanent_write_mode();
            assert_eq!(current_mode(), ThreadMode::Execute);
            assert_eq!(run(&heap, heap.entry_point(&second).unwrap()), Ok(2));
            first
        })
    };
    for _ in 0..2 {
        assert_eq!(current_mode(), ThreadMode::Execute);
        assert_eq!(run(&heap, entry), Ok(2));
    }
    {
        let _scope = WriteScope::enter();
        assert_fault(run(&heap, entry), FaultKind::ExecuteInWriteMode);
    }
    assert_eq!(run(&heap, entry), Ok(2));
    let first = compiler.join().unwrap();
    assert_eq!(current_mode(), ThreadMode::Execute);
    heap.free(first).unwrap();
    heap.check_invariants().unwrap();
}

fn assert_fault(result: Result<u32, VmError>, kind: FaultKind) {
    assert!(
        matches!(result, Err(VmError::Fault(fault)) if fault.kind == kind),
        "expected {kind:?}, got {result:?}"
    );
}

#[test]
fn write_modes_stay_on_their_thread_under_map_jit() {
    assert_passes(
        "write scopes and permanent write mode, MapJit",
        explore(2, write_modes_stay_on_their_thread),
    );
}

/// Two write sessions and a free on one page at once, and code run through the checked
/// path (`Heap::call`). Under `Protect` the page is read-write while any session is open
/// and execute-read after the last one closes, whatever the order; the heap's invariants
/// hold at the end of every interleaving. No executor runs here under `Protect`: it would
/// fault, as the models above show.
fn sessions_and_free_on_one_page(strategy: WxStrategy) {
    let heap = Arc::new(heap(strategy));
    let mut blocks: Vec<Block> = (0..3).map(|_| heap.alloc(100).unwrap()).collect();
    let page = heap.page_size();
    assert!(
        blocks
            .iter()
            .all(|b| b.addr() / page == blocks[0].addr() / page)
    );
    let mut freed = blocks.pop().unwrap();
    emit(&heap, &mut freed, 3);
    let writers: Vec<_> = blocks
        .into_iter()
        .enumerate()
        .map(|(i, mut block)| {
            let heap = Arc::clone(&heap);
            thread::spawn(move || {
                emit(&heap, &mut block, i as u32);
                block
            })
        })
        .collect();
    if strategy != WxStrategy::Protect {
        // SAFETY: the block holds `return 3`, finalized; it is freed only below.
        assert_eq!(unsafe { heap.call(&freed) }.unwrap(), 3);
    }
    heap.free(freed).unwrap();
    let blocks: Vec<Block> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    heap.check_invariants().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        // SAFETY: each block holds `return i`, finalized.
        assert_eq!(unsafe { heap.call(block) }.unwrap(), i as u32);
    }
}

#[test]
fn sessions_and_free_on_one_page_under_protect() {
    assert_passes(
        "two sessions and a free on one page, Protect",
        explore(3, || sessions_and_free_on_one_page(WxStrategy::Protect)),
    );
}

#[test]
fn sessions_and_free_on_one_page_under_map_jit() {
    assert_passes(
        "two sessions and a free on one page, MapJit",
        explore(3, || sessions_and_free_on_one_page(WxStrategy::MapJit)),
    );
}

#[test]
fn sessions_and_free_on_one_page_under_dual_map() {
    assert_passes(
        "two sessions and a free on one page, DualMap",
        explore(3, || sessions_and_free_on_one_page(WxStrategy::DualMap)),
    );
}
