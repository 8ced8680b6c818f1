//! The seeds' scenario: a background compiler thread, permanently in write mode, emits
//! functions of different sizes (several per page) while the main thread keeps calling the
//! ones already finalized, on the same pages. Shared by the tests and the `jit_scenario`
//! demo.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use codeheap::{Arch, Block, Error, Heap, HeapStats, Os, enter_permanent_write_mode};

/// What a run of the scenario did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Functions the background thread compiled and published.
    pub compiled: usize,
    /// Calls that returned the right value.
    pub calls: u64,
    /// Calls that returned a wrong value.
    pub wrong: u64,
    /// Calls refused or faulted (the simulator reports faults as errors).
    pub faults: u64,
    /// The heap's stats once every function was called, before they were freed.
    pub stats: HeapStats,
}

/// The size of function `i`: a spread of sizes, several per page, some past a page.
pub fn function_size(i: usize, page: usize) -> usize {
    let sizes = [24, 60, 100, 200, 260, 500, 900, 1500, 3000];
    if i % 23 == 22 {
        page + 64
    } else {
        sizes[i % sizes.len()]
    }
}

/// Machine code of `size` bytes that returns `value`: no-ops, then `return value`.
pub fn function_code(arch: Arch, size: usize, value: u32) -> Vec<u8> {
    let ret = arch.encode_return_u32(value);
    let ret = ret.as_bytes();
    let nop: &[u8] = match arch {
        Arch::X86_64 => &[0x90],
        Arch::Aarch64 => &[0x1F, 0x20, 0x03, 0xD5],
    };
    let body = (size - ret.len()) / nop.len() * nop.len();
    let mut code: Vec<u8> = nop.iter().copied().cycle().take(body).collect();
    code.extend_from_slice(ret);
    code
}

/// Time a compiler spends on a function before emitting it, so that writing and running
/// overlap as they do in an engine.
const COMPILE_TIME: Duration = Duration::from_micros(50);

fn compile<O: Os>(heap: &Heap<O>, i: usize) -> Result<(Block, u32), Error> {
    let started = Instant::now();
    while started.elapsed() < COMPILE_TIME {
        std::hint::spin_loop();
    }
    let size = function_size(i, heap.page_size());
    let value = 0x5000 + i as u32;
    let mut block = heap.alloc(size)?;
    let code = function_code(heap.arch(), size, value);
    heap.write(&mut block, |w| w.write(0, &code))?;
    Ok((block, value))
}

/// Runs the scenario with `functions` functions; every published function is called at
/// least `min_calls` times.
pub fn run<O: Os>(heap: &Heap<O>, functions: usize, min_calls: u64) -> Outcome {
    let (publish, published) = mpsc::channel::<(Block, u32)>();
    let writer_done = AtomicBool::new(false);
    // What the main thread holds: the block, its entry point (taken once, as an engine
    // does), the value it returns, and how often it ran.
    let mut ready: Vec<(Block, usize, u32, u64)> = Vec::new();
    let (mut calls, mut wrong, mut faults) = (0, 0, 0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            enter_permanent_write_mode();
            for i in 0..functions {
                let compiled =
                    compile(heap, i).expect("the background compiler allocates and writes");
                publish.send(compiled).expect("the main thread listens");
            }
            writer_done.store(true, Ordering::Release);
        });
        loop {
            let finished = writer_done.load(Ordering::Acquire);
            for (block, value) in published.try_iter() {
                let entry = heap
                    .entry_point(&block)
                    .expect("published blocks are finalized");
                ready.push((block, entry, value, 0));
            }
            for (_, entry, value, count) in &mut ready {
                // SAFETY: every entry point is a complete `extern "C" fn() -> u32`, finalized
                // by the writer; its block lives until after this loop. Natively this is a
                // plain call through a function pointer, with no lock taken.
                match unsafe { heap.vm().os().call(*entry) } {
                    Ok(got) if got == *value => calls += 1,
                    Ok(_) => wrong += 1,
                    Err(_) => faults += 1,
                }
                *count += 1;
            }
            let all_called = ready.iter().all(|(.., count)| *count >= min_calls);
            if finished && ready.len() == functions && all_called {
                break;
            }
        }
    });
    let stats = heap.stats();
    for (block, ..) in ready {
        heap.free(block).expect("published blocks free");
    }
    Outcome {
        compiled: functions,
        calls,
        wrong,
        faults,
        stats,
    }
}
