//! The heap's buckets, pages, traps, write sessions and bad inputs, on the simulated OS.

use codeheap::vm::sim::{Fault, FaultKind};
use codeheap::vm::{self, PageState, SysCall};
use codeheap::{
    Block, CHUNK, Error, FrameDescription, Heap, HeapConfig, Protection, SPARE_PAGES, SimOs,
    SizeClasses, ThreadMode, WriteScope, WxStrategy, current_mode, enter_permanent_write_mode,
};

#[path = "common/sim.rs"]
mod sim;
use sim::{read, run};

fn apple() -> Heap<SimOs> {
    Heap::with_config(SimOs::apple(), HeapConfig::default()).unwrap()
}

fn linux(strategy: WxStrategy) -> Heap<SimOs> {
    Heap::with_config(SimOs::linux(), HeapConfig::with_strategy(strategy)).unwrap()
}

/// A heap that gives every freed block back to its page at once: for tests of how pages
/// are filed, which kept freed blocks would otherwise stand in front of.
fn keeping_nothing(config: HeapConfig) -> Heap<SimOs> {
    let config = HeapConfig {
        keep_freed_blocks: false,
        ..config
    };
    Heap::with_config(SimOs::linux(), config).unwrap()
}

fn every_strategy() -> Vec<Heap<SimOs>> {
    vec![
        apple(),
        linux(WxStrategy::DualMap),
        linux(WxStrategy::Protect),
        linux(WxStrategy::Rwx),
    ]
}

/// Writes `return value` into the block, finalizing it.
fn emit(heap: &Heap<SimOs>, block: &mut Block, value: u32) {
    let code = heap.arch().encode_return_u32(value);
    heap.write(block, |w| w.write(0, code.as_bytes())).unwrap();
}

#[test]
fn sizes_round_to_power_of_two_buckets_of_chunks() {
    for heap in every_strategy() {
        let page = heap.page_size();
        let sizes = [1, 100, 128, 129, 300, 1000, 2048, 3000, page];
        let blocks: Vec<Block> = sizes.iter().map(|&s| heap.alloc(s).unwrap()).collect();
        for (block, &size) in blocks.iter().zip(&sizes) {
            assert_eq!(block.size(), size);
            assert_eq!(block.capacity(), size.next_power_of_two().max(128));
            assert_eq!(block.addr() % 128, 0, "chunk-aligned");
        }
        let stats = heap.stats();
        assert_eq!(stats.live_blocks, sizes.len());
        assert_eq!(stats.requested_bytes, sizes.iter().sum::<usize>());
        assert_eq!(
            stats.rounding_loss,
            stats.allocated_bytes - stats.requested_bytes
        );
        assert_eq!(stats.buckets.len(), if page == 4096 { 6 } else { 8 });
        assert_eq!(stats.buckets[0].blocks, 3, "1, 100 and 128 bytes");
        assert_eq!(stats.large_blocks, 0);
        for block in blocks {
            heap.free(block).unwrap();
        }
    }
}

fn chunk_classes(strategy: WxStrategy) -> Heap<SimOs> {
    let config = HeapConfig {
        size_classes: SizeClasses::Chunks,
        ..HeapConfig::with_strategy(strategy)
    };
    Heap::with_config(SimOs::linux(), config).unwrap()
}

#[test]
fn chunk_classes_round_to_whole_chunks() {
    let (pow2, chunks) = (
        linux(WxStrategy::DualMap),
        chunk_classes(WxStrategy::DualMap),
    );
    for (size, rounded) in [(1, 128), (129, 256), (300, 384), (2100, 2176), (4096, 4096)] {
        assert_eq!(
            chunks.alloc(size).unwrap().capacity(),
            rounded,
            "{size} bytes"
        );
        assert_eq!(
            pow2.alloc(size).unwrap().capacity(),
            size.next_power_of_two().max(CHUNK)
        );
    }
    assert_eq!(chunks.alloc(4097).unwrap().capacity(), 8192);
    let stats = chunks.stats();
    // Each request's shortfall to its whole chunks (4,096 bytes fill theirs exactly).
    assert_eq!(stats.rounding_loss, 127 + 127 + 84 + 76 + 4095);
    chunks.check_invariants().unwrap();
}

#[test]
fn chunk_classes_take_the_tightest_hole() {
    let heap = keeping_nothing(HeapConfig {
        size_classes: SizeClasses::Chunks,
        ..HeapConfig::with_strategy(WxStrategy::Protect)
    });
    let page = |b: &Block| b.addr() & !(heap.page_size() - 1);
    // 4 KiB pages of 32 chunks: one left with a 5-chunk hole, another with a 3-chunk one.
    let five_left = heap.alloc(27 * CHUNK).unwrap();
    let three_left = heap.alloc(29 * CHUNK).unwrap();
    assert_ne!(page(&five_left), page(&three_left));
    let acquired = heap.stats().pages_acquired;
    // Three chunks fit both holes: the tighter one is taken, the longer kept whole.
    let three = heap.alloc(3 * CHUNK).unwrap();
    assert_eq!(page(&three), page(&three_left));
    assert_eq!(three.addr(), three_left.addr() + 29 * CHUNK);
    let four = heap.alloc(4 * CHUNK).unwrap();
    assert_eq!(page(&four), page(&five_left));
    // One chunk is left, in the first page; two need a new page.
    let one = heap.alloc(CHUNK).unwrap();
    assert_eq!(page(&one), page(&five_left));
    assert_eq!(heap.stats().pages_acquired, acquired);
    let two = heap.alloc(2 * CHUNK).unwrap();
    assert_eq!(heap.stats().pages_acquired, acquired + 1);
    heap.check_invariants().unwrap();
    // Freed, the chunks are found again: the 3-chunk hole serves a 2-chunk block.
    heap.free(three).unwrap();
    let again = heap.alloc(2 * CHUNK).unwrap();
    assert_eq!(page(&again), page(&three_left));
    heap.check_invariants().unwrap();
    for block in [two, again, one, four, five_left, three_left] {
        heap.free(block).unwrap();
    }
    heap.check_invariants().unwrap();
}

#[test]
fn small_blocks_share_pages_and_never_overlap() {
    for heap in every_strategy() {
        let page = heap.page_size();
        let blocks: Vec<Block> = (0..40).map(|i| heap.alloc(64 + i * 37).unwrap()).collect();
        let mut spans: Vec<(usize, usize)> = blocks
            .iter()
            .map(|b| (b.addr(), b.addr() + b.capacity()))
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        let pages: std::collections::BTreeSet<usize> =
            blocks.iter().map(|b| b.addr() - b.addr() % page).collect();
        assert!(pages.len() < blocks.len() / 2, "blocks share pages");
        for block in blocks {
            heap.free(block).unwrap();
        }
    }
}

#[test]
fn a_page_is_split_off_a_larger_bucket() {
    let heap = linux(WxStrategy::DualMap);
    let big = heap.alloc(2048).unwrap();
    let small = heap.alloc(100).unwrap();
    assert_eq!(
        small.addr(),
        big.addr() + 2048,
        "same page, split off the 2 KiB bucket"
    );
    let stats = heap.stats();
    assert_eq!(stats.buckets[0].pages, 1);
    assert_eq!(stats.buckets[4].pages, 0);
}

#[test]
fn full_pages_are_kept_apart_and_empty_pages_go_back() {
    let heap = keeping_nothing(HeapConfig::with_strategy(WxStrategy::Protect));
    let quarter: Vec<Block> = (0..4).map(|_| heap.alloc(1024).unwrap()).collect();
    let stats = heap.stats();
    assert_eq!(
        (stats.buckets[3].pages, stats.buckets[3].full_pages),
        (1, 1)
    );
    let extra = heap.alloc(1024).unwrap();
    assert_eq!(heap.stats().buckets[3].pages, 2);
    let mut quarter = quarter.into_iter();
    heap.free(quarter.next().unwrap()).unwrap();
    assert_eq!(
        heap.stats().buckets[3].full_pages,
        0,
        "a free chunk takes it off the full list"
    );
    for block in quarter {
        heap.free(block).unwrap();
    }
    let stats = heap.stats();
    assert_eq!(stats.spare_pages, 1, "an empty page is kept");
    heap.free(extra).unwrap();
    assert_eq!(heap.stats().spare_pages, 2);
    // Up to SPARE_PAGES are kept; pages emptied beyond that go back.
    let page = heap.page_size();
    let whole: Vec<Block> = (0..SPARE_PAGES + 3)
        .map(|_| heap.alloc(page).unwrap())
        .collect();
    let stats = heap.stats();
    assert_eq!(stats.spare_pages, 0, "the spares were used first");
    let acquired = stats.pages_acquired;
    assert_eq!(acquired, SPARE_PAGES as u64 + 3, "then new pages");
    for block in whole {
        heap.free(block).unwrap();
    }
    let stats = heap.stats();
    assert_eq!(
        (stats.spare_pages, stats.pages_released),
        (SPARE_PAGES, 3),
        "the pages beyond the spares go back"
    );
    assert_eq!(heap.page_allocator().stats().used_bytes, SPARE_PAGES * page);
    heap.check_invariants().unwrap();
}

/// A freed small block is kept, trap-filled and found by no address, and the next
/// allocation of its chunk count takes it back with no new page; other sizes cannot.
#[test]
fn a_freed_small_block_is_kept_for_the_next_of_its_size() {
    for heap in every_strategy() {
        let arch = heap.arch();
        // Two blocks of two chunks on one page; no page of one-chunk blocks yet.
        let mut neighbour = heap.alloc(200).unwrap();
        emit(&heap, &mut neighbour, 1);
        let mut kept = heap.alloc(200).unwrap();
        emit(&heap, &mut kept, 2);
        let (addr, capacity) = (kept.addr(), kept.capacity());
        let acquired = heap.stats().pages_acquired;
        heap.free(kept).unwrap();
        let stats = heap.stats();
        assert_eq!((stats.kept_blocks, stats.kept_bytes), (1, capacity));
        assert_eq!(stats.live_blocks, 1, "a kept block is not live");
        assert!(arch.is_trap_filled(&read(&heap, addr, capacity)));
        assert_eq!(heap.find(addr), None);
        assert_eq!(heap.free_address(addr), Err(Error::NotAllocated { addr }));
        assert_eq!(heap.stats(), stats, "nothing changed");
        heap.check_invariants().unwrap();

        // One chunk is not its size: split off the page of two-chunk blocks, it would take
        // the first free chunk, but the kept chunks are not free.
        let other = heap.alloc(100).unwrap();
        assert_eq!(
            other.addr() - other.addr() % heap.page_size(),
            addr - addr % heap.page_size(),
            "the same page"
        );
        assert!(
            !(addr..addr + capacity).contains(&other.addr()),
            "a block of another size does not take kept chunks"
        );
        // Two chunks are.
        let mut again = heap.alloc(129).unwrap();
        assert_eq!(again.addr(), addr, "the kept block comes back");
        assert_eq!(heap.stats().kept_blocks, 0);
        assert_eq!(heap.stats().pages_acquired, acquired);
        assert!(
            arch.is_trap_filled(&read(&heap, addr, capacity)),
            "it still holds traps"
        );
        emit(&heap, &mut again, 3);
        assert_eq!(run(&heap, &again), Ok(3));
        assert_eq!(run(&heap, &neighbour), Ok(1));
        for block in [again, other, neighbour] {
            heap.free(block).unwrap();
        }
        heap.check_invariants().unwrap();
    }
}

/// The cache never holds a page: freeing a page's last live block gives back the blocks
/// kept from it, and the page goes where an empty page goes (the spare, then back).
#[test]
fn kept_blocks_never_keep_a_page() {
    let heap = linux(WxStrategy::DualMap);
    let page = heap.page_size();
    let blocks: Vec<Block> = (0..3).map(|_| heap.alloc(500).unwrap()).collect();
    let base = blocks[0].addr() - blocks[0].addr() % page;
    let mut blocks = blocks.into_iter();
    let last = blocks.next().unwrap();
    for block in blocks {
        heap.free(block).unwrap();
    }
    assert_eq!(heap.stats().kept_blocks, 2);
    heap.check_invariants().unwrap();
    heap.free(last).unwrap();
    let stats = heap.stats();
    assert_eq!((stats.kept_blocks, stats.spare_pages), (0, 1));
    assert!(heap.arch().is_trap_filled(&read(&heap, base, page)));
    heap.check_invariants().unwrap();
    // The whole page is free again: a block of a page's size takes it.
    let whole = heap.alloc(page).unwrap();
    assert_eq!(whole.addr(), base);
    heap.free(whole).unwrap();
    heap.check_invariants().unwrap();
}

/// Up to 2 KiB of blocks of each size are kept (16 of one chunk, one of 16), nothing
/// larger; `keep_freed_blocks: false` keeps nothing.
#[test]
fn the_cache_is_bounded_and_can_be_turned_off() {
    let heap = linux(WxStrategy::DualMap);
    let page = heap.page_size();
    let anchor = heap.alloc(64).unwrap();
    let small: Vec<Block> = (0..40).map(|_| heap.alloc(64).unwrap()).collect();
    let wide: Vec<Block> = (0..3).map(|_| heap.alloc(16 * CHUNK).unwrap()).collect();
    let widest = heap.alloc(page).unwrap();
    let _hold = heap.alloc(page / 2).unwrap();
    let small_addrs: std::collections::BTreeSet<usize> = small.iter().map(Block::addr).collect();
    for block in small.into_iter().chain(wide).chain([widest]) {
        heap.free(block).unwrap();
    }
    heap.check_invariants().unwrap();
    let stats = heap.stats();
    assert_eq!(stats.kept_blocks, 16 + 1, "16 of one chunk and one of 16");
    assert_eq!(stats.kept_bytes, 32 * CHUNK);
    for _ in 0..16 {
        let block = heap.alloc(1).unwrap();
        assert!(small_addrs.contains(&block.addr()), "a kept block");
    }
    assert_eq!(heap.stats().kept_blocks, 1);
    heap.check_invariants().unwrap();
    heap.free(anchor).unwrap();

    let off = keeping_nothing(HeapConfig::with_strategy(WxStrategy::DualMap));
    let _anchor = off.alloc(64).unwrap();
    let block = off.alloc(64).unwrap();
    off.free(block).unwrap();
    assert_eq!(off.stats().kept_blocks, 0);
    off.check_invariants().unwrap();
}

/// `decommit_all` lets go of kept blocks first: their pages are decommitted or released
/// like the rest, and no kept block outlives it.
#[test]
fn decommit_all_lets_kept_blocks_go() {
    for heap in every_strategy() {
        let live = heap.alloc(64).unwrap();
        let freed = heap.alloc(64).unwrap();
        heap.free(freed).unwrap();
        assert_eq!(heap.stats().kept_blocks, 1);
        heap.decommit_all().unwrap();
        assert_eq!(heap.stats().kept_blocks, 0);
        heap.check_invariants().unwrap();
        heap.free(live).unwrap();
        heap.check_invariants().unwrap();
        assert_eq!(heap.page_allocator().stats().used_bytes, 0);
    }
}

/// The invariant check reads kept blocks: a byte written into one through the OS layer
/// (as a stray raw write would) is caught.
#[test]
fn the_invariant_check_reads_kept_blocks() {
    let heap = linux(WxStrategy::DualMap);
    let _live = heap.alloc(64).unwrap();
    let freed = heap.alloc(64).unwrap();
    let addr = freed.addr();
    heap.free(freed).unwrap();
    heap.check_invariants().unwrap();
    {
        let _write = WriteScope::enter();
        heap.vm().write(addr + 70, &[0x90]).unwrap();
    }
    let err = heap.check_invariants().unwrap_err();
    assert!(err.contains("kept freed block"), "{err}");
}

#[test]
fn large_blocks_have_pages_of_their_own() {
    // Every strategy the simulated Linux has, keeping no freed block: pages go back at once.
    let heaps = [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx]
        .map(|strategy| keeping_nothing(HeapConfig::with_strategy(strategy)));
    for heap in heaps {
        let page = heap.page_size();
        let mut block = heap.alloc(2 * page + 1).unwrap();
        assert_eq!(block.capacity(), 3 * page);
        assert_eq!(block.addr() % page, 0);
        emit(&heap, &mut block, 77);
        assert_eq!(run(&heap, &block), Ok(77));
        let stats = heap.stats();
        assert_eq!((stats.large_blocks, stats.large_bytes), (1, 3 * page));
        let before = heap.page_allocator().stats().used_bytes;
        heap.free(block).unwrap();
        assert_eq!(heap.page_allocator().stats().used_bytes, before - 3 * page);
        assert_eq!(heap.stats().kept_large_blocks, 0, "nothing is kept");
    }
}

/// A freed large block is kept, trap-filled, execute-read and found by no address, and the
/// next allocation of its page count takes it back with no trip to the page allocator
/// (one with an unwind entry too, its segment having a slot); other page counts cannot.
#[test]
fn a_freed_large_block_is_kept_for_the_next_of_its_page_count() {
    for heap in every_strategy() {
        let (arch, page) = (heap.arch(), heap.page_size());
        let mut block = heap.alloc(2 * page + 1).unwrap();
        emit(&heap, &mut block, 77);
        let (addr, capacity) = (block.addr(), block.capacity());
        let used = heap.page_allocator().stats().used_bytes;
        let before = heap.stats();
        heap.free(block).unwrap();
        let stats = heap.stats();
        assert_eq!(
            (stats.kept_large_blocks, stats.kept_large_bytes),
            (1, capacity)
        );
        assert_eq!((stats.large_blocks, stats.live_blocks), (0, 0));
        assert_eq!(stats.pages_released, before.pages_released);
        assert_eq!(heap.page_allocator().stats().used_bytes, used, "still held");
        assert!(arch.is_trap_filled(&read(&heap, addr, capacity)));
        let info = heap.vm().query(addr).unwrap();
        let execute_read = PageState::Committed(Protection::ExecuteRead);
        assert_eq!((info.state, info.size >= capacity), (execute_read, true));
        assert_eq!(heap.find(addr), None);
        assert_eq!(heap.free_address(addr), Err(Error::NotAllocated { addr }));
        heap.check_invariants().unwrap();

        let other = heap.alloc(page + 1).unwrap();
        assert_ne!(other.addr(), addr, "two pages are not its three");
        assert_eq!(heap.stats().kept_large_blocks, 1);
        let mut again = heap.alloc(3 * page).unwrap();
        assert_eq!(again.addr(), addr, "the kept block comes back");
        let stats = heap.stats();
        assert_eq!(stats.kept_large_blocks, 0);
        assert_eq!(
            stats.pages_acquired,
            before.pages_acquired + 2,
            "only `other`'s"
        );
        assert!(arch.is_trap_filled(&read(&heap, addr, capacity)));
        emit(&heap, &mut again, 78);
        assert_eq!(run(&heap, &again), Ok(78));
        heap.check_invariants().unwrap();

        heap.free(again).unwrap();
        let frame = FrameDescription::standard(arch);
        let probes = heap.stats().secondary_probes;
        let with_entry = heap.alloc_with_unwind(3 * page, frame).unwrap();
        assert_eq!(with_entry.addr(), addr, "with a slot of its segment");
        let stats = heap.stats();
        assert_eq!(stats.kept_large_blocks, 0);
        assert_eq!(stats.secondary_probes, probes + 1);
        for block in [with_entry, other] {
            heap.free(block).unwrap();
        }
        heap.check_invariants().unwrap();
    }
}

/// Kept large blocks hold 16 pages at most: a block that would go over gives back the ones
/// kept longest ago; one larger than that is not kept at all.
#[test]
fn kept_large_blocks_make_room_oldest_first() {
    let heap = linux(WxStrategy::DualMap);
    let page = heap.page_size();
    let blocks: Vec<Block> = (0..5).map(|_| heap.alloc(4 * page).unwrap()).collect();
    let addrs: Vec<usize> = blocks.iter().map(Block::addr).collect();
    let two = heap.alloc(2 * page).unwrap();
    let huge = heap.alloc(17 * page).unwrap();
    let mut blocks = blocks.into_iter();
    for block in blocks.by_ref().take(4) {
        heap.free(block).unwrap();
    }
    let stats = heap.stats();
    assert_eq!((stats.kept_large_blocks, stats.pages_released), (4, 0));
    heap.free(two).unwrap();
    let stats = heap.stats();
    assert_eq!(
        stats.kept_large_bytes,
        14 * page,
        "three of four pages, and the two"
    );
    assert_eq!(stats.pages_released, 4, "the oldest went back");
    heap.free(huge).unwrap();
    let stats = heap.stats();
    assert_eq!(stats.kept_large_bytes, 14 * page);
    assert_eq!(stats.pages_released, 4 + 17, "too large to keep");
    heap.check_invariants().unwrap();
    // The newest of four pages comes back first; the oldest one is the page allocator's.
    let again = heap.alloc(4 * page).unwrap();
    assert_eq!(again.addr(), addrs[3]);
    for block in blocks.chain([again]) {
        heap.free(block).unwrap();
    }
    heap.check_invariants().unwrap();
}

/// If giving back an older kept block to make room is refused, the freed block goes back to
/// the page allocator itself, and the kept ones stay as they were.
#[test]
fn a_refused_give_back_of_a_kept_large_block_gives_back_the_freed_one() {
    // With no free pages kept below, every give-back decommits.
    let mut config = HeapConfig::with_strategy(WxStrategy::DualMap);
    config.pages.max_free_pages = 0;
    let heap = Heap::with_config(SimOs::linux(), config).unwrap();
    let page = heap.page_size();
    let blocks: Vec<Block> = (0..5).map(|_| heap.alloc(4 * page).unwrap()).collect();
    let mut blocks = blocks.into_iter();
    for block in blocks.by_ref().take(4) {
        heap.free(block).unwrap();
    }
    let kept = heap.stats();
    assert_eq!(kept.kept_large_bytes, 16 * page);
    heap.vm().os().fail_next(SysCall::Fallocate, libc::ENOMEM);
    heap.free(blocks.next().unwrap()).unwrap();
    let stats = heap.stats();
    assert_eq!(
        stats.kept_large_bytes,
        16 * page,
        "the kept blocks are untouched"
    );
    assert_eq!(
        stats.pages_released,
        kept.pages_released + 4,
        "the freed one went back"
    );
    assert_eq!(stats.live_blocks, 0);
    heap.check_invariants().unwrap();
    assert_eq!(heap.trim(), Ok(16 * page), "and trim gives back the rest");
    heap.check_invariants().unwrap();
}

#[test]
fn new_blocks_freed_blocks_and_tails_hold_traps() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let mut block = heap.alloc(300).unwrap();
        assert!(
            arch.is_trap_filled(&read(&heap, block.addr(), 512)),
            "fresh"
        );
        emit(&heap, &mut block, 9);
        let code = arch.encode_return_u32(9);
        let len = code.as_bytes().len();
        assert_eq!(read(&heap, block.addr(), len), code.as_bytes());
        assert!(
            arch.is_trap_filled(&read(&heap, block.addr() + 300, 212)),
            "the tail holds traps"
        );
        let neighbour = heap.alloc(100).unwrap();
        let addr = block.addr();
        heap.free(block).unwrap();
        assert!(arch.is_trap_filled(&read(&heap, addr, 512)), "freed");
        heap.free(neighbour).unwrap();
    }
}

/// A free scrubs the block up to its size (to a whole instruction word), written or not:
/// code may have been put there through raw pointers; past the size the block still holds
/// the traps it was allocated with. Pages the heap gave back and takes again still hold its
/// traps and are not filled twice.
#[test]
fn scrubbing_covers_the_size_not_the_capacity() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let word = arch.instruction_alignment();
        let dirty = 301usize.next_multiple_of(word);
        let filled = |heap: &Heap<SimOs>| heap.stats().filled_bytes;
        // A page for the size, kept, so the blocks below take no fresh page.
        let keep = heap.alloc(301).unwrap();
        let unwritten = heap.alloc(301).unwrap();
        let before = filled(&heap);
        let addr = unwritten.addr();
        heap.free(unwritten).unwrap();
        assert_eq!(filled(&heap), before + dirty as u64, "the size, not 512");
        assert!(arch.is_trap_filled(&read(&heap, addr, 512)));

        let mut written = heap.alloc(301).unwrap();
        let before = filled(&heap);
        emit(&heap, &mut written, 3);
        assert_eq!(
            filled(&heap),
            before + (dirty - 301) as u64,
            "a write pads only the partial word after the code"
        );
        let addr = written.addr();
        heap.free(written).unwrap();
        assert_eq!(filled(&heap), before + (2 * dirty - 301) as u64);
        assert!(arch.is_trap_filled(&read(&heap, addr, 512)));

        let page = heap.page_size();
        let before = filled(&heap);
        let first = heap.alloc(3 * page).unwrap();
        let after_fresh = filled(&heap);
        assert_eq!(
            after_fresh,
            before + 3 * page as u64,
            "fresh pages are filled"
        );
        let addr = first.addr();
        heap.free(first).unwrap();
        let scrubbed = filled(&heap);
        let again = heap.alloc(3 * page).unwrap();
        assert_eq!(again.addr(), addr, "the kept pages come back");
        assert_eq!(filled(&heap), scrubbed, "kept pages are not filled again");
        assert!(arch.is_trap_filled(&read(&heap, addr, 3 * page)));
        heap.free(again).unwrap();
        heap.free(keep).unwrap();
        heap.check_invariants().unwrap();
    }
}

#[test]
fn freed_code_traps_when_run() {
    let heap = apple();
    let mut block = heap.alloc(64).unwrap();
    emit(&heap, &mut block, 5);
    let addr = block.addr();
    let keep = heap.alloc(64).unwrap(); // keeps the page mapped
    heap.free(block).unwrap();
    // SAFETY: the simulator decodes the code; it touches no process memory.
    let stale = unsafe { vm::Os::call(heap.vm().os(), addr) };
    assert_eq!(
        stale,
        Err(vm::Error::Fault(Fault {
            addr,
            kind: FaultKind::Trap
        }))
    );
    heap.free(keep).unwrap();
}

#[test]
fn entry_points_need_a_finalized_block_and_execute_mode() {
    for heap in every_strategy() {
        let mut block = heap.alloc(16).unwrap();
        assert_eq!(
            heap.entry_point(&block),
            Err(Error::NotFinalized { addr: block.addr() })
        );
        emit(&heap, &mut block, 1234);
        assert_eq!(heap.entry_point(&block), Ok(block.addr()));
        assert_eq!(run(&heap, &block), Ok(1234));
        let refused = codeheap::with_write_mode(|| heap.entry_point(&block));
        assert_eq!(
            refused,
            Err(Error::Vm(vm::Error::WrongThreadMode {
                required: ThreadMode::Execute,
                current: ThreadMode::Write
            }))
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_permanent_write_mode();
                assert!(matches!(heap.entry_point(&block), Err(Error::Vm(_))));
            });
        });
        // Patching: rewrite and run the new code.
        emit(&heap, &mut block, 4321);
        assert_eq!(run(&heap, &block), Ok(4321));
        heap.free(block).unwrap();
    }
}

/// A handle answers for its finalized block without the heap's lock, but only while
/// nothing else changed the block: a failed rewrite, a free by address (and the address
/// reused) and `decommit_all` are all seen.
#[test]
fn entry_points_follow_the_block_behind_the_handle() {
    for heap in every_strategy() {
        let mut block = heap.alloc(64).unwrap();
        emit(&heap, &mut block, 7);
        assert_eq!(heap.entry_point(&block), Ok(block.addr()));
        let failed = heap.write(&mut block, |w| w.write(60, &[0; 8]));
        assert!(matches!(failed, Err(Error::OutOfBounds { .. })));
        assert_eq!(
            heap.entry_point(&block),
            Err(Error::NotFinalized { addr: block.addr() })
        );
        emit(&heap, &mut block, 8);
        assert_eq!(run(&heap, &block), Ok(8));

        let addr = block.addr();
        heap.free_address(addr).unwrap();
        let mut reused = heap.alloc(64).unwrap();
        assert_eq!(reused.addr(), addr, "the freed chunk is taken again");
        emit(&heap, &mut reused, 9);
        assert_eq!(heap.entry_point(&block), Err(Error::StaleBlock { addr }));
        assert_eq!(run(&heap, &reused), Ok(9));

        heap.decommit_all().unwrap();
        assert_eq!(heap.entry_point(&reused), Err(Error::Decommitted { addr }));
        heap.free(reused).unwrap();
    }
}

/// `emit` allocates and writes in one call, all or nothing: a failed or panicking
/// generator leaves no block behind, only traps.
#[test]
fn emit_is_alloc_and_write_or_nothing() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let code = arch.encode_return_u32(42);
        let (block, written) = heap
            .emit(100, |w| {
                w.write(0, code.as_bytes())?;
                Ok(code.as_bytes().len())
            })
            .unwrap();
        assert_eq!((block.size(), written), (100, code.as_bytes().len()));
        assert_eq!(run(&heap, &block), Ok(42));
        let addr = block.addr();

        let failed = heap.emit(100, |w| w.write(96, &[0; 8]));
        assert!(matches!(failed, Err(Error::OutOfBounds { .. })));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            heap.emit(100, |w| -> Result<(), Error> {
                w.write(0, &[0x90; 16])?;
                panic!("code generator bug")
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(current_mode(), ThreadMode::Execute);
        let stats = heap.stats();
        assert_eq!((stats.live_blocks, stats.allocs, stats.frees), (1, 3, 2));
        let next = addr + block.capacity();
        assert!(arch.is_trap_filled(&read(&heap, next, block.capacity())));
        heap.check_invariants().unwrap();
        assert_eq!(heap.emit(0, |_| Ok(())).err(), Some(Error::ZeroSize));
        heap.free(block).unwrap();
    }
}

/// A finished buffer: allocated, copied, padded, flushed and finalized in one call, the
/// block's tail still traps, and the write switch back where it was.
#[test]
fn emit_code_copies_a_finished_function() {
    for heap in every_strategy() {
        let arch = heap.arch();
        let code = arch.encode_return_u32(7);
        let block = heap.emit_code(code.as_bytes()).unwrap();
        assert_eq!(block.size(), code.as_bytes().len());
        assert_eq!(run(&heap, &block), Ok(7));
        assert_eq!(current_mode(), ThreadMode::Execute);
        assert!(heap.find(block.addr()).unwrap().finalized);
        let len = code.as_bytes().len();
        let tail = read(&heap, block.addr() + len, block.capacity() - len);
        let word = len.next_multiple_of(arch.instruction_alignment()) - len;
        assert!(tail[..word].iter().all(|&b| b == 0), "partial word zeroed");
        assert!(arch.is_trap_filled(&tail[word..]), "the tail still traps");
        // Another on the same page: its one flush is the copy's.
        let before = heap.stats();
        let second = heap.emit_code(code.as_bytes()).unwrap();
        assert_eq!(heap.stats().icache_flushes, before.icache_flushes + 1);
        heap.free(second).unwrap();
        assert_eq!(
            heap.stats().icache_flushes,
            before.icache_flushes + 2,
            "and one for the traps its free wrote"
        );
        // A large function too.
        let mut big = vec![0x90u8; 3 * heap.page_size()];
        let ret = arch.encode_return_u32(9);
        big[..ret.as_bytes().len()].copy_from_slice(ret.as_bytes());
        let large = heap.emit_code(&big).unwrap();
        assert_eq!(run(&heap, &large), Ok(9));
        heap.check_invariants().unwrap();
        heap.free(large).unwrap();
        heap.free(block).unwrap();
        assert_eq!(heap.emit_code(&[]).err(), Some(Error::ZeroSize));
        assert_eq!(heap.stats().live_blocks, 0);
    }
}

/// A refused protection change under `Protect` (the copy cannot be opened, or its pages
/// closed) leaves no block behind.
#[test]
fn emit_code_is_all_or_nothing() {
    let heap = linux(WxStrategy::Protect);
    let code = heap.arch().encode_return_u32(3);
    let keep = heap.emit_code(code.as_bytes()).unwrap();
    for refused in 0..2 {
        heap.vm().os().fail_after(refused, libc::EIO);
        let failed = heap.emit_code(code.as_bytes());
        heap.vm().os().clear_failures();
        assert!(failed.is_err(), "refusal {refused}");
        assert_eq!(heap.stats().live_blocks, 1, "refusal {refused}");
        heap.check_invariants().unwrap();
    }
    assert_eq!(run(&heap, &keep), Ok(3));
    let again = heap.emit_code(code.as_bytes()).unwrap();
    assert_eq!(run(&heap, &again), Ok(3));
}

#[test]
fn writing_past_the_block_is_refused_and_leaves_it_unfinalized() {
    for heap in every_strategy() {
        let mut block = heap.alloc(10).unwrap();
        let outcome = heap.write(&mut block, |w| {
            w.write(0, &[0x90; 8])?;
            w.write(8, &[0x90; 3])
        });
        assert_eq!(
            outcome,
            Err(Error::OutOfBounds {
                offset: 8,
                len: 3,
                size: 10
            })
        );
        assert_eq!(current_mode(), ThreadMode::Execute);
        assert_eq!(
            heap.entry_point(&block),
            Err(Error::NotFinalized { addr: block.addr() })
        );
        // The write session is over: the block can be written (or freed) again.
        emit(&heap, &mut block, 3);
        assert_eq!(run(&heap, &block), Ok(3));
        heap.free(block).unwrap();
    }
}

#[test]
fn a_panic_while_writing_restores_mode_and_protection() {
    for heap in every_strategy() {
        let mut block = heap.alloc(64).unwrap();
        let page = block.addr() - block.addr() % heap.page_size();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            heap.write(&mut block, |w| -> Result<(), Error> {
                w.write(0, &[0xCC; 4])?;
                panic!("code generator bug");
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(current_mode(), ThreadMode::Execute);
        assert_eq!(
            heap.vm().query(page).unwrap().state,
            PageState::Committed(Protection::ExecuteRead),
            "the page is executable again ({})",
            heap.strategy()
        );
        assert_eq!(
            heap.entry_point(&block),
            Err(Error::NotFinalized { addr: block.addr() })
        );
        heap.free(block).unwrap();
    }
}

#[test]
fn under_protect_only_written_pages_are_writable_and_never_executable() {
    let heap = linux(WxStrategy::Protect);
    let mut a = heap.alloc(128).unwrap();
    let mut b = heap.alloc(128).unwrap();
    let other_page = heap.alloc(4096).unwrap();
    let page = a.addr() - a.addr() % 4096;
    let os = heap.vm().os();
    heap.write(&mut a, |w| {
        assert_eq!(os.protection_at(page), Some(Protection::ReadWrite));
        assert_eq!(
            os.protection_at(other_page.addr()),
            Some(Protection::ExecuteRead)
        );
        w.write(0, &[0xC3])
    })
    .unwrap();
    assert_eq!(os.protection_at(page), Some(Protection::ExecuteRead));
    let before = heap.stats().protect_calls_made;
    emit(&heap, &mut b, 2);
    assert_eq!(heap.stats().protect_calls_made - before, 2, "RX → RW → RX");
    heap.free(a).unwrap();
    assert_eq!(
        os.protection_at(page),
        Some(Protection::ExecuteRead),
        "closed after the free"
    );
    assert_eq!(heap.stats().protect_calls_made - before, 4);
    let _ = (b, other_page);
}

/// What the other strategies count as skipped is what `Protect` makes for the same calls,
/// a page that a session holds open included: a free and an emit inside a session on their
/// page change no protection under `Protect`, so the others skip none either.
#[test]
fn skipped_protect_calls_mirror_what_protect_makes() {
    let changes = |heap: &Heap<SimOs>| {
        let stats = heap.stats();
        stats.protect_calls_made + stats.protect_calls_skipped
    };
    let mut seen = Vec::new();
    for heap in every_strategy() {
        let page = heap.page_size();
        let mut a = heap.alloc(128).unwrap();
        let mut b = heap.alloc(128).unwrap();
        let c = heap.alloc(128).unwrap();
        assert_eq!(a.addr() / page, c.addr() / page, "one page");
        emit(&heap, &mut b, 2);
        let before = changes(&heap);
        let mut inside = Vec::new();
        heap.write(&mut a, |w| {
            let opened = changes(&heap);
            heap.free(c).unwrap();
            let emitted = heap.emit_code(heap.arch().encode_return_u32(3).as_bytes());
            inside.push(changes(&heap) - opened);
            w.write(0, heap.arch().encode_return_u32(1).as_bytes())
                .map(|()| emitted.unwrap())
        })
        .map(|emitted| assert_eq!(run(&heap, &emitted), Ok(3)))
        .unwrap();
        assert_eq!(
            inside,
            [0],
            "{}: the page was open already",
            heap.strategy()
        );
        assert_eq!(run(&heap, &a), Ok(1));
        // Fresh pages for a large block: made executable once.
        let large = heap.alloc(2 * page).unwrap();
        seen.push((heap.strategy(), changes(&heap) - before));
        heap.free(large).unwrap();
    }
    let counted = |strategy| seen.iter().find(|&&(s, _)| s == strategy).unwrap().1;
    assert_eq!(
        counted(WxStrategy::Protect),
        3,
        "opened and closed once, fresh pages made executable once"
    );
    for (strategy, n) in &seen {
        assert_eq!(*n, counted(WxStrategy::Protect), "{strategy}");
    }
}

#[test]
fn map_jit_and_dual_map_never_change_protections() {
    for heap in [apple(), linux(WxStrategy::DualMap)] {
        let mprotects = heap.vm().os().syscalls().get(SysCall::Mprotect);
        let mut blocks = Vec::new();
        for i in 0..50 {
            let mut block = heap.alloc(32 + i * 97).unwrap();
            emit(&heap, &mut block, i as u32);
            blocks.push(block);
        }
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(run(&heap, block), Ok(i as u32));
        }
        for block in blocks {
            heap.free(block).unwrap();
        }
        let stats = heap.stats();
        assert_eq!(stats.protect_calls_made, 0);
        assert!(stats.protect_calls_skipped > 100);
        if heap.strategy() == WxStrategy::MapJit {
            let made = heap.vm().os().syscalls().get(SysCall::Mprotect) - mprotects;
            assert_eq!(made, 0, "not one mprotect on MAP_JIT memory");
        }
    }
}

#[test]
fn bad_addresses_are_typed_errors_that_change_nothing() {
    for heap in every_strategy() {
        let mut block = heap.alloc(512).unwrap();
        emit(&heap, &mut block, 8);
        let freed = heap.alloc(256).unwrap();
        let freed_addr = freed.addr();
        heap.free_address(freed_addr).unwrap();
        let before = heap.stats();
        let addr = block.addr();
        let cases = [
            (heap.alloc(0).map(drop), Error::ZeroSize),
            (
                heap.alloc(usize::MAX).map(drop),
                Error::SizeOverflow { size: usize::MAX },
            ),
            // A record keeps a block's size in 32 bits.
            (
                heap.alloc(1 << 32).map(drop),
                Error::SizeOverflow { size: 1 << 32 },
            ),
            (
                heap.free_address(addr + 128),
                Error::InteriorAddress {
                    addr: addr + 128,
                    block: addr,
                },
            ),
            (
                heap.free_address(freed_addr),
                Error::NotAllocated { addr: freed_addr },
            ),
            (
                heap.free_address(0x1000),
                Error::NotFromHeap { addr: 0x1000 },
            ),
            (heap.free(freed), Error::StaleBlock { addr: freed_addr }),
        ];
        for (outcome, expected) in cases {
            assert_eq!(outcome, Err(expected));
        }
        assert_eq!(heap.stats(), before, "nothing changed");
        assert_eq!(run(&heap, &block), Ok(8), "the live block still runs");
        assert_eq!(heap.find(addr + 100).map(|info| info.addr), Some(addr));
        assert!(heap.find(freed_addr).is_none());
        assert!(heap.is_jit_address(addr) && !heap.is_jit_address(0x1000));
        heap.free(block).unwrap();
    }
}

#[test]
fn a_handle_names_only_its_own_block() {
    // Handles find their record by the place they carry; the place is taken over by the
    // next block, and every heap numbers its places from the start.
    let heap = linux(WxStrategy::DualMap);
    let other = linux(WxStrategy::DualMap);
    let mut foreign = other.alloc(64).unwrap();
    emit(&other, &mut foreign, 5);
    let stale = heap.alloc(64).unwrap();
    let stale_addr = stale.addr();
    heap.free_address(stale_addr).unwrap();
    let mut reuser = heap.alloc(300).unwrap();
    emit(&heap, &mut reuser, 6);
    let before = heap.stats();
    let (foreign_addr, mut stale) = (foreign.addr(), stale);
    assert_eq!(
        heap.entry_point(&foreign),
        Err(Error::StaleBlock { addr: foreign_addr })
    );
    assert_eq!(
        heap.write(&mut foreign, |w| w.write(0, &[0xC3])),
        Err(Error::StaleBlock { addr: foreign_addr })
    );
    assert_eq!(
        heap.write(&mut stale, |w| w.write(0, &[0xC3])),
        Err(Error::StaleBlock { addr: stale_addr })
    );
    assert_eq!(
        heap.free(stale),
        Err(Error::StaleBlock { addr: stale_addr })
    );
    assert_eq!(
        heap.free(foreign),
        Err(Error::StaleBlock { addr: foreign_addr })
    );
    assert_eq!(heap.stats(), before, "nothing changed");
    assert_eq!(
        run(&heap, &reuser),
        Ok(6),
        "the block at the reused place runs"
    );
    heap.check_invariants().unwrap();
    heap.free(reuser).unwrap();
    heap.check_invariants().unwrap();
}

#[test]
fn an_address_names_only_the_block_that_starts_there() {
    // A freed block's record place goes to the next block, wherever that lands; the freed
    // block's page and the large-block map may still remember the place for the old
    // address, which must then name nothing.
    let heap = linux(WxStrategy::DualMap);
    let page = heap.page_size();
    let mut neighbour = heap.alloc(64).unwrap();
    emit(&heap, &mut neighbour, 1);
    let gone = heap.alloc(64).unwrap();
    let gone_addr = gone.addr();
    heap.free(gone).unwrap();
    let mut small_reuser = heap.alloc(300).unwrap();
    emit(&heap, &mut small_reuser, 2);
    assert_ne!(
        small_reuser.addr(),
        gone_addr,
        "on a page of another bucket"
    );
    let big = heap.alloc(page + 1).unwrap();
    let big_addr = big.addr();
    heap.free(big).unwrap();
    let mut large_reuser = heap.alloc(300).unwrap();
    emit(&heap, &mut large_reuser, 3);
    let before = heap.stats();
    for addr in [gone_addr, big_addr] {
        assert_eq!(heap.find(addr), None);
        assert_eq!(heap.free_address(addr), Err(Error::NotAllocated { addr }));
    }
    assert_eq!(heap.stats(), before, "nothing changed");
    for (block, value) in [(&neighbour, 1), (&small_reuser, 2), (&large_reuser, 3)] {
        assert_eq!(run(&heap, block), Ok(value));
        assert_eq!(
            heap.find(block.addr()).map(|info| info.addr),
            Some(block.addr())
        );
    }
    heap.check_invariants().unwrap();
    for addr in [neighbour.addr(), small_reuser.addr(), large_reuser.addr()] {
        heap.free_address(addr).unwrap();
    }
    heap.check_invariants().unwrap();
}

#[test]
fn a_block_being_written_cannot_be_freed() {
    let heap = apple();
    let mut block = heap.alloc(64).unwrap();
    let addr = block.addr();
    heap.write(&mut block, |w| {
        assert_eq!(heap.free_address(addr), Err(Error::BlockBusy { addr }));
        w.write(0, &[0; 4])
    })
    .unwrap();
    heap.free_address(addr).unwrap();
}

#[test]
fn decommit_all_keeps_addresses_until_blocks_are_freed() {
    for heap in every_strategy() {
        let mut small = heap.alloc(100).unwrap();
        let mut large = heap.alloc(3 * heap.page_size()).unwrap();
        emit(&heap, &mut small, 1);
        emit(&heap, &mut large, 2);
        heap.decommit_all().unwrap();
        assert_eq!(
            heap.entry_point(&small),
            Err(Error::Decommitted { addr: small.addr() })
        );
        assert_eq!(
            heap.write(&mut large, |w| w.write(0, &[1])),
            Err(Error::Decommitted { addr: large.addr() })
        );
        assert_eq!(
            heap.vm().query(small.addr()).unwrap().state,
            PageState::Reserved
        );
        assert!(
            heap.is_jit_address(small.addr()),
            "the address stays reserved"
        );
        assert_eq!(
            heap.page_allocator().stats().parked_bytes,
            4 * heap.page_size()
        );

        let mut fresh = heap.alloc(100).unwrap();
        assert_ne!(fresh.addr(), small.addr());
        emit(&heap, &mut fresh, 3);
        assert_eq!(run(&heap, &fresh), Ok(3));

        heap.free(small).unwrap();
        heap.free(large).unwrap();
        assert_eq!(heap.stats().parked_pages, 0);
        assert_eq!(heap.page_allocator().stats().parked_bytes, 0);
        heap.free(fresh).unwrap();
    }
}

/// Under the hardened runtime a process may map one MAP_JIT region (the simulator refuses a
/// second): two heaps, each needing several segments, take them all from that one.
#[test]
fn heaps_of_one_process_share_its_map_jit_region() {
    let os = std::sync::Arc::new(SimOs::apple());
    let heaps = [(), ()].map(|()| Heap::with_config(os.clone(), HeapConfig::default()).unwrap());
    let page = heaps[0].page_size();
    let mut blocks = Vec::new();
    for (h, heap) in heaps.iter().enumerate() {
        // 40 pages each: no two fit in one segment, so every block is a reservation.
        for i in 0..4 {
            let value = (10 * h + i) as u32;
            let mut block = heap.alloc(40 * page).unwrap();
            let code = heap.arch().encode_return_u32(value);
            heap.write(&mut block, |w| w.write(0, code.as_bytes()))
                .unwrap();
            blocks.push((h, block, value));
        }
    }
    assert!(heaps[0].vm().stats().regions >= 4);
    assert_eq!(os.syscalls().get(SysCall::Mmap), 1, "one MAP_JIT region");
    for (h, block, value) in &blocks {
        assert!(os.is_map_jit(block.addr()));
        // SAFETY: the simulator decodes the code; it touches no process memory.
        assert_eq!(unsafe { heaps[*h].call(block) }, Ok(*value));
    }
    for (h, block, _) in blocks {
        heaps[h].free(block).unwrap();
    }
    drop(heaps);
    assert_eq!(os.mapped_pages(), 0, "every range went back to the region");
}

/// The bytes the heap says it has reserved and committed are what the OS has mapped and
/// backs with memory for it (the simulator counts them), after allocations small and large
/// and frees.
#[test]
fn reserved_and_committed_bytes_are_what_the_os_holds() {
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let heap = linux(strategy);
        let page = heap.page_size();
        let mut blocks: Vec<_> = (0..20)
            .map(|i| heap.alloc(100 + 300 * i).unwrap())
            .collect();
        blocks.push(heap.alloc(40 * page).unwrap());
        let mut live = Vec::new();
        for (i, block) in blocks.into_iter().enumerate() {
            if i % 3 == 0 {
                heap.free(block).unwrap();
            } else {
                live.push(block);
            }
        }
        let stats = heap.stats();
        let os = heap.vm().os();
        // A dual-mapped page is mapped twice, backed once.
        let views = if strategy == WxStrategy::DualMap {
            2
        } else {
            1
        };
        assert_eq!(
            os.mapped_pages() * page,
            views * stats.reserved_bytes,
            "{strategy}"
        );
        assert_eq!(
            os.resident_frames() * page,
            stats.committed_bytes,
            "{strategy}"
        );
        assert!(stats.committed_bytes < stats.reserved_bytes, "{strategy}");
    }
}

/// A writer's `fill` and `write` land at their offsets in the block, and nowhere else: the
/// block before it keeps its bytes.
#[test]
fn a_writer_fills_and_writes_at_its_offsets() {
    for heap in every_strategy() {
        let mut before = heap.alloc(256).unwrap();
        let mut block = heap.alloc(256).unwrap();
        assert_eq!(block.addr(), before.addr() + 256);
        heap.write(&mut before, |w| w.fill(0, 256, &[0x44]))
            .unwrap();
        heap.write(&mut block, |w| {
            w.fill(0, 256, &[0x11])?;
            w.fill(100, 20, &[0x22, 0x33])?;
            w.write(200, &[0x55; 4])?;
            let mut back = [0; 4];
            w.read(118, &mut back)?;
            assert_eq!(back, [0x22, 0x33, 0x11, 0x11], "read back in the session");
            Ok(())
        })
        .unwrap();
        let bytes = read(&heap, block.addr(), 256);
        let mut want = vec![0x11; 256];
        for (i, byte) in want[100..120].iter_mut().enumerate() {
            *byte = if i % 2 == 0 { 0x22 } else { 0x33 };
        }
        want[200..204].fill(0x55);
        assert_eq!(bytes, want, "{}", heap.strategy());
        assert_eq!(read(&heap, before.addr(), 256), vec![0x44; 256]);
    }
}
