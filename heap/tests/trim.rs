//! `Heap::trim`: what the heap keeps committed for speed (kept freed blocks, spare pages,
//! the page allocator's free pages) goes back; live blocks stay as they are. On the
//! simulated OS.

use std::collections::BTreeSet;

use codeheap::{Block, Heap, HeapConfig, SimOs, WxStrategy};

fn every_strategy() -> Vec<Heap<SimOs>> {
    let linux = |strategy| Heap::with_config(SimOs::linux(), HeapConfig::with_strategy(strategy));
    vec![
        Heap::with_config(SimOs::apple(), HeapConfig::default()).unwrap(),
        linux(WxStrategy::DualMap).unwrap(),
        linux(WxStrategy::Protect).unwrap(),
        linux(WxStrategy::Rwx).unwrap(),
    ]
}

fn emit(heap: &Heap<SimOs>, size: usize, value: u32) -> Block {
    let code = heap.arch().encode_return_u32(value);
    let mut block = heap.alloc(size).unwrap();
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    block
}

fn run(heap: &Heap<SimOs>, block: &Block) -> u32 {
    // SAFETY: the simulator decodes the code; it touches no process memory.
    unsafe { heap.call(block) }.unwrap()
}

/// The pages live blocks occupy.
fn pages_of(heap: &Heap<SimOs>, blocks: &[(Block, u32)]) -> usize {
    let page = heap.page_size();
    let pages: BTreeSet<usize> = (blocks.iter())
        .flat_map(|(block, _)| (block.addr()..block.addr() + block.capacity()).step_by(page))
        .map(|addr| addr / page)
        .collect();
    pages.len()
}

#[test]
fn trim_gives_back_every_page_no_live_block_holds() {
    for heap in every_strategy() {
        let page = heap.page_size();
        let sizes = |i: usize| [64, 300, 1000, 3000, page + 100, 3 * page][i % 6];
        let blocks: Vec<(Block, u32)> = (0..120)
            .map(|i| (emit(&heap, sizes(i), i as u32), i as u32))
            .collect();
        // Free three in four: kept freed blocks, spare pages, free pages below.
        let (freed, live): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 4 != 0);
        for (_, (block, _)) in freed {
            heap.free(block).unwrap();
        }
        let live: Vec<(Block, u32)> = live.into_iter().map(|(_, block)| block).collect();
        let before = heap.stats();
        let kept_below = heap.page_allocator().stats().free_bytes;
        assert!(before.kept_blocks > 0 && before.spare_pages > 0 && kept_below > 0);
        assert!(before.kept_large_blocks > 0);

        let decommitted = heap.trim().unwrap();
        let after = heap.stats();
        let below = heap.page_allocator().stats();
        assert_eq!(decommitted, before.committed_bytes - after.committed_bytes);
        // Kept freed small blocks never hold a page alone: giving them back empties none.
        // Kept large blocks hold pages of their own, which go back and are decommitted.
        let spares = before.spare_pages * page;
        assert_eq!(decommitted, kept_below + spares + before.kept_large_bytes);
        let kept = (after.kept_blocks, after.kept_large_blocks);
        assert_eq!((kept, after.spare_pages), ((0, 0), 0));
        assert_eq!(below.free_bytes, 0);
        assert_eq!(below.used_bytes, pages_of(&heap, &live) * page);
        heap.check_invariants().unwrap();
        for (block, value) in &live {
            assert_eq!(run(&heap, block), *value, "live blocks run on");
        }

        // Nothing is left to give back; the heap allocates as before.
        assert_eq!(heap.trim(), Ok(0));
        let again = emit(&heap, 200, 7);
        assert_eq!(run(&heap, &again), 7);
        heap.check_invariants().unwrap();
    }
}

#[test]
fn a_refused_decommit_leaves_the_heap_consistent_and_trim_can_be_retried() {
    let heap = Heap::with_config(SimOs::linux(), HeapConfig::default()).unwrap();
    let blocks: Vec<Block> = (0..40).map(|i| emit(&heap, 3000, i)).collect();
    let kept = emit(&heap, 100, 99);
    for block in blocks {
        heap.free(block).unwrap();
    }
    heap.vm().os().fail_after(1, libc::ENOMEM);
    assert!(heap.trim().is_err());
    heap.vm().os().clear_failures();
    heap.check_invariants().unwrap();
    assert!(heap.trim().unwrap() > 0, "the rest goes on the second try");
    assert_eq!(heap.page_allocator().stats().free_bytes, 0);
    assert_eq!(run(&heap, &kept), 99);
    heap.check_invariants().unwrap();
}
