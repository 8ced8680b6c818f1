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
