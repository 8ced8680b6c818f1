//! Real machine code, run through function pointers: many blocks of different sizes on
//! shared pages, each called and checked, freed, and the addresses reused. Natively on
//! x86-64 and under qemu on aarch64.
#![cfg(all(any(target_os = "linux", target_os = "macos"), not(miri)))]

use std::collections::BTreeSet;

use codeheap::{Block, Heap, NativeOs, WxStrategy};

fn strategies() -> Vec<WxStrategy> {
    WxStrategy::ALL
        .into_iter()
        .filter(|&s| Heap::with_strategy(s).is_ok())
        .collect()
}

fn emit(heap: &Heap<NativeOs>, size: usize, value: u32) -> Block {
    let mut block = heap.alloc(size).unwrap();
    let code = heap.arch().encode_return_u32(value);
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    block
}

fn call(heap: &Heap<NativeOs>, block: &Block) -> u32 {
    // SAFETY: the block holds `extern "C" fn() -> u32` code, finalized and flushed, and
    // lives until the call returns.
    let function: extern "C" fn() -> u32 = unsafe { heap.function(block) }.unwrap();
    function()
}

#[test]
fn many_blocks_on_shared_pages_run_and_their_addresses_are_reused() {
    let found = strategies();
    assert!(
        found.contains(&WxStrategy::Protect),
        "Protect works everywhere: {found:?}"
    );
    for strategy in found {
        let heap = Heap::with_strategy(strategy).unwrap();
        let page = heap.page_size();
        let sizes: Vec<usize> = (0..120).map(|i| 8 + (i * 53) % (3 * page)).collect();
        let blocks: Vec<Block> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| emit(&heap, size, 0x1000 + i as u32))
            .collect();
        let pages: BTreeSet<usize> = blocks.iter().map(|b| b.addr() - b.addr() % page).collect();
        assert!(pages.len() < blocks.len(), "{strategy}: blocks share pages");
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(
                call(&heap, block),
                0x1000 + i as u32,
                "{strategy}: block {i}"
            );
        }

        // Free every other block, then run the survivors: neighbours are unaffected.
        let (freed, kept): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let freed_addrs: BTreeSet<usize> = freed.iter().map(|(_, b)| b.addr()).collect();
        for (_, block) in freed {
            heap.free(block).unwrap();
        }
        for (i, block) in &kept {
            assert_eq!(
                call(&heap, block),
                0x1000 + *i as u32,
                "{strategy}: survivor {i}"
            );
        }

        // New blocks land in the freed space and run their own code.
        let again: Vec<Block> = (0..60)
            .map(|i| emit(&heap, sizes[2 * i], 0x9000 + i as u32))
            .collect();
        let reused = again
            .iter()
            .filter(|b| freed_addrs.contains(&b.addr()))
            .count();
        assert!(reused > 20, "{strategy}: only {reused} addresses reused");
        for (i, block) in again.iter().enumerate() {
            assert_eq!(call(&heap, block), 0x9000 + i as u32);
        }
        let stats = heap.stats();
        assert_eq!(stats.live_blocks, 120);
        if strategy != WxStrategy::Protect {
            assert_eq!(stats.protect_calls_made, 0, "{strategy}");
        }
        for block in again.into_iter().chain(kept.into_iter().map(|(_, b)| b)) {
            heap.free(block).unwrap();
        }
        assert_eq!(heap.stats().live_blocks, 0);
    }
}

#[test]
fn patched_code_runs_the_new_bytes() {
    for strategy in strategies() {
        let heap = Heap::with_strategy(strategy).unwrap();
        let mut block = emit(&heap, 64, 1);
        let neighbour = emit(&heap, 64, 2);
        for value in 10..20 {
            let code = heap.arch().encode_return_u32(value);
            heap.write(&mut block, |w| w.write(0, code.as_bytes()))
                .unwrap();
            assert_eq!(call(&heap, &block), value, "{strategy}");
            assert_eq!(call(&heap, &neighbour), 2);
        }
    }
}

/// Code emitted into room for far more, truncated in its session or shrunk after it, runs;
/// and the room given back holds new code that runs too.
#[test]
fn shrunk_blocks_run_and_the_room_they_gave_back_is_reused() {
    for strategy in strategies() {
        let heap = Heap::with_strategy(strategy).unwrap();
        let page = heap.page_size();
        let mut functions = Vec::new();
        // What each block had before it shrank and no longer has.
        let mut given_back = Vec::new();
        for (i, room) in [1000, 3 * page, 5 * page + 7].into_iter().enumerate() {
            let value = 0x500 + i as u32;
            let code = heap.arch().encode_return_u32(value);
            let (block, ()) = heap
                .emit(room, |w| {
                    w.write(0, code.as_bytes())?;
                    w.truncate(code.as_bytes().len())
                })
                .unwrap();
            assert_eq!(block.size(), code.as_bytes().len());
            assert_eq!(
                call(&heap, &block),
                value,
                "{strategy}: truncated from {room}"
            );
            functions.push((block, value));

            let mut block = emit(&heap, room, value + 0x100);
            let had = block.capacity();
            heap.shrink(&mut block, 64).unwrap();
            given_back.push(block.addr() + block.capacity()..block.addr() + had);
            assert_eq!(
                call(&heap, &block),
                value + 0x100,
                "{strategy}: shrunk from {room}"
            );
            functions.push((block, value + 0x100));
        }
        // New blocks of a chunk each land among what was given back, and run.
        let mut reused = 0;
        for i in 0..40 {
            let value = 0x900 + i;
            let block = emit(&heap, 100, value);
            reused += usize::from(given_back.iter().any(|room| room.contains(&block.addr())));
            functions.push((block, value));
        }
        assert!(
            reused > 0,
            "{strategy}: no new block in the room given back"
        );
        for (block, value) in &functions {
            assert_eq!(call(&heap, block), *value, "{strategy}");
        }
        heap.check_invariants().unwrap();
        for (block, _) in functions {
            heap.free(block).unwrap();
        }
    }
}

#[test]
fn the_default_heap_uses_the_platform_strategy() {
    let heap = Heap::new().unwrap();
    let expected = if cfg!(target_os = "macos") {
        WxStrategy::MapJit
    } else {
        WxStrategy::DualMap
    };
    assert_eq!(heap.strategy(), expected);
    let block = emit(&heap, 16, 42);
    assert_eq!(call(&heap, &block), 42);
}

/// A compiler thread that owns its heap emits and frees through the exclusive view (no
/// lock), while another thread runs the functions it publishes, on the same pages: every
/// call returns the value its function was written with.
#[test]
fn a_thread_owning_its_heap_emits_through_the_view_while_another_runs_the_code() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    /// A published function: its entry point (48 bits) and the value it returns above.
    fn pack(entry: usize, value: u32) -> u64 {
        assert!(entry < 1 << 48 && value < 1 << 16);
        entry as u64 | (u64::from(value) << 48)
    }

    for strategy in strategies() {
        if strategy == WxStrategy::Protect {
            // Running code on a page another thread has made read-write faults: live
            // code and writes on one page need MapJit, DualMap or Rwx.
            continue;
        }
        let mut heap = Heap::with_strategy(strategy).unwrap();
        let arch = heap.arch();
        let slots: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        // The function the runner is about to call or calling: the compiler frees a
        // function only once it is unpublished and not announced here.
        let hazard = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let calls = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let runner = scope.spawn(|| {
                while !done.load(SeqCst) {
                    for slot in &slots {
                        let word = slot.load(SeqCst);
                        hazard.store(word, SeqCst);
                        if word == 0 || slot.load(SeqCst) != word {
                            continue;
                        }
                        let (entry, value) = ((word & ((1 << 48) - 1)) as usize, word >> 48);
                        // SAFETY: a published entry point is a finalized `extern "C" fn()
                        // -> u32`, and it stays allocated while announced in `hazard`.
                        let function: extern "C" fn() -> u32 =
                            unsafe { core::mem::transmute::<usize, _>(entry) };
                        assert_eq!(u64::from(function()), value, "{strategy}");
                        calls.fetch_add(1, SeqCst);
                    }
                    hazard.store(0, SeqCst);
                }
            });
            let mut view = heap.exclusive();
            let mut blocks: Vec<Option<(Block, u64)>> = (0..8).map(|_| None).collect();
            for round in 0..2000u32 {
                let slot = round as usize % 8;
                if let Some((old, word)) = blocks[slot].take() {
                    slots[slot].store(0, SeqCst);
                    while hazard.load(SeqCst) == word {
                        std::hint::spin_loop();
                    }
                    view.free(old).unwrap();
                }
                let value = round % (1 << 16);
                let block = view
                    .emit_code(arch.encode_return_u32(value).as_bytes())
                    .unwrap();
                let word = pack(view.entry_point(&block).unwrap(), value);
                // The block may reuse a freed one's bytes: the runner must not run what it
                // fetched from them before.
                view.sync_cores().unwrap();
                slots[slot].store(word, SeqCst);
                blocks[slot] = Some((block, word));
                if round % 64 == 63 {
                    // Let the runner call what is published before going on.
                    let seen = calls.load(SeqCst);
                    while calls.load(SeqCst) < seen + 8 && !runner.is_finished() {
                        std::thread::yield_now();
                    }
                }
            }
            done.store(true, SeqCst);
            runner.join().unwrap();
            assert!(
                calls.load(SeqCst) >= 31 * 8,
                "{strategy}: the runner ran the code"
            );
            for (block, _) in blocks.into_iter().flatten() {
                view.free(block).unwrap();
            }
            assert_eq!(view.stats().live_blocks, 0);
        });
    }
}
