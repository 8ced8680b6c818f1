//! Shrinking blocks in place (`Heap::shrink`, `CodeWriter::truncate`), on the simulated OS:
//! what is cut off traps, what the smaller block no longer needs goes back, the code kept
//! still runs, and bad requests change nothing.

use codeheap::vm::sim::{Fault, FaultKind};
use codeheap::vm::{self, Os};
use codeheap::{
    Block, CHUNK, Error, FrameDescription, Heap, HeapConfig, PageAllocatorConfig, SimOs,
    SizeClasses, WxStrategy,
};

#[path = "common/sim.rs"]
mod sim;
use sim::{read, run};

/// Segments of 8 pages (6 of code), so that a block with a mapping of its own is a few
/// pages, not 31 (these tests also run under miri).
fn heap(os: SimOs, strategy: Option<WxStrategy>, classes: SizeClasses) -> Heap<SimOs> {
    let defaults = HeapConfig::default();
    let config = HeapConfig {
        strategy,
        size_classes: classes,
        pages: PageAllocatorConfig {
            segment_pages: 8,
            ..defaults.pages
        },
        ..defaults
    };
    Heap::with_config(os, config).unwrap()
}

/// Apple Silicon (16 KiB pages, MAP_JIT) and every strategy of the simulated Linux.
fn every_strategy(classes: SizeClasses) -> Vec<Heap<SimOs>> {
    let linux = |strategy| heap(SimOs::linux(), Some(strategy), classes);
    vec![
        heap(SimOs::apple(), None, classes),
        linux(WxStrategy::DualMap),
        linux(WxStrategy::Protect),
        linux(WxStrategy::Rwx),
    ]
}

/// Fills the block with a function returning `value` followed by no-op-like filler up to
/// its size (bytes a shrink must turn into traps), finalizing it.
fn emit_padded(heap: &Heap<SimOs>, block: &mut Block, value: u32) {
    let code = heap.arch().encode_return_u32(value);
    let size = block.size();
    heap.write(block, |w| {
        w.fill(0, size, &[0x5A])?;
        w.write(0, code.as_bytes())
    })
    .unwrap();
}

/// From `size` to `end` the block at `addr` holds what a finalized block's tail holds: a
/// partial instruction word zeroed, traps after it.
fn assert_cut_off(heap: &Heap<SimOs>, addr: usize, size: usize, end: usize) {
    let align = heap.arch().instruction_alignment();
    let word_end = size.next_multiple_of(align);
    let partial = read(heap, addr + size, word_end - size);
    assert!(partial.iter().all(|&b| b == 0), "partial word {partial:?}");
    let tail = read(heap, addr + word_end, end - word_end);
    assert!(heap.arch().is_trap_filled(&tail), "traps up to {end:#x}");
}

/// Under power-of-two classes a block on a page of a smaller bucket (one split off for
/// smaller blocks) takes its new size's class, and its chunks past it go back to the page.
#[test]
fn a_small_block_shrinks_into_a_smaller_class_and_its_chunks_go_back() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let mut block = heap.alloc(1000).unwrap();
        assert_eq!(block.capacity(), 1024);
        emit_padded(&heap, &mut block, 42);
        let addr = block.addr();
        // A one-chunk block splits the page off the 1 KiB bucket: it now serves one-chunk
        // blocks.
        let small = heap.alloc(CHUNK).unwrap();
        assert_eq!(small.addr(), addr + 1024);
        heap.shrink(&mut block, 201).unwrap();
        assert_eq!(
            (block.addr(), block.size(), block.capacity()),
            (addr, 201, 256)
        );
        assert_cut_off(&heap, addr, 201, 1024);
        assert_eq!(run(&heap, &block), Ok(42), "still finalized, still runs");
        let info = heap.find(addr).unwrap();
        assert_eq!((info.size, info.capacity, info.finalized), (201, 256, true));
        let stats = heap.stats();
        assert_eq!(
            (stats.requested_bytes, stats.allocated_bytes),
            (201 + 128, 256 + 128)
        );
        heap.check_invariants().unwrap();
        // The six chunks past the new class are free, the first of them first.
        let next = heap.alloc(CHUNK).unwrap();
        assert_eq!(next.addr(), addr + 256);
        assert_eq!(heap.find(addr + 400), None);
        heap.check_invariants().unwrap();
        for block in [block, small, next] {
            heap.free(block).unwrap();
        }
        heap.check_invariants().unwrap();
    }
}

/// Under power-of-two classes a block shrinks no further than its page's bucket: the page
/// keeps serving the blocks it serves (truncating every function from one room takes no
/// new page for each).
#[test]
fn a_small_block_shrinks_no_further_than_its_page_s_bucket() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let mut block = heap.alloc(1000).unwrap();
        emit_padded(&heap, &mut block, 43);
        let addr = block.addr();
        heap.shrink(&mut block, 201).unwrap();
        assert_eq!((block.size(), block.capacity()), (201, 1024));
        assert_cut_off(&heap, addr, 201, 1024);
        let info = heap.find(addr + 1000).unwrap();
        assert_eq!((info.addr, info.size, info.capacity), (addr, 201, 1024));
        heap.check_invariants().unwrap();
        let next = heap.alloc(1000).unwrap();
        assert_eq!(
            next.addr(),
            addr + 1024,
            "the page still serves 1 KiB blocks"
        );
        assert_eq!(run(&heap, &block), Ok(43));
        // Freed, it goes back whole: kept for the next block of its capacity.
        heap.free(block).unwrap();
        let again = heap.alloc(1000).unwrap();
        assert_eq!(again.addr(), addr);
        heap.check_invariants().unwrap();
        for block in [next, again] {
            heap.free(block).unwrap();
        }
        heap.check_invariants().unwrap();
    }
}

#[test]
fn a_shrink_within_the_class_only_cuts_the_code_off() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let mut block = heap.alloc(1000).unwrap();
        emit_padded(&heap, &mut block, 7);
        let (addr, fills) = (block.addr(), heap.stats().fills);
        heap.shrink(&mut block, 600).unwrap();
        assert_eq!((block.size(), block.capacity()), (600, 1024));
        assert_cut_off(&heap, addr, 600, 1024);
        assert_eq!(heap.stats().fills, fills + 1);
        // Shrinking to the size it has changes nothing.
        heap.shrink(&mut block, 600).unwrap();
        assert_eq!(heap.stats().fills, fills + 1);
        assert_eq!(run(&heap, &block), Ok(7));
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();
    }
}

#[test]
fn under_chunk_classes_the_chunks_past_the_new_size_go_back() {
    for heap in every_strategy(SizeClasses::Chunks) {
        let mut block = heap.alloc(1000).unwrap();
        assert_eq!(block.capacity(), 8 * CHUNK);
        emit_padded(&heap, &mut block, 9);
        let addr = block.addr();
        heap.shrink(&mut block, 3 * CHUNK - 5).unwrap();
        assert_eq!(block.capacity(), 3 * CHUNK);
        assert_cut_off(&heap, addr, 3 * CHUNK - 5, 8 * CHUNK);
        heap.check_invariants().unwrap();
        let next = heap.alloc(5 * CHUNK).unwrap();
        assert_eq!(next.addr(), addr + 3 * CHUNK, "the freed run, first fit");
        assert_eq!(run(&heap, &block), Ok(9));
        for block in [block, next] {
            heap.free(block).unwrap();
        }
        heap.check_invariants().unwrap();
    }
}

/// A cut inside the last instruction word of a block that fills its chunk zeroes that
/// word's tail and goes no further: the next block, right after it, is untouched.
#[test]
fn a_cut_inside_a_full_block_s_last_word_leaves_the_next_block_alone() {
    for heap in every_strategy(SizeClasses::Chunks) {
        let mut block = heap.alloc(CHUNK).unwrap();
        let mut next = heap.alloc(CHUNK).unwrap();
        assert_eq!(next.addr(), block.addr() + CHUNK);
        emit_padded(&heap, &mut block, 3);
        emit_padded(&heap, &mut next, 4);
        let neighbour = read(&heap, next.addr(), CHUNK);

        heap.shrink(&mut block, CHUNK - 2).unwrap();
        assert_cut_off(&heap, block.addr(), CHUNK - 2, CHUNK);
        assert_eq!(read(&heap, next.addr(), CHUNK), neighbour);
        assert_eq!((run(&heap, &block), run(&heap, &next)), (Ok(3), Ok(4)));
        heap.check_invariants().unwrap();
        for block in [block, next] {
            heap.free(block).unwrap();
        }
    }
}

#[test]
fn a_large_block_gives_back_the_pages_past_its_new_size() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let page = heap.page_size();
        let mut block = heap.alloc(5 * page).unwrap();
        emit_padded(&heap, &mut block, 11);
        let addr = block.addr();
        let used = heap.page_allocator().stats().used_bytes;
        let released = heap.stats().pages_released;

        heap.shrink(&mut block, page + 10).unwrap();
        assert_eq!((block.size(), block.capacity()), (page + 10, 2 * page));
        assert_cut_off(&heap, addr, page + 10, 2 * page);
        let pages = heap.page_allocator();
        assert_eq!(pages.stats().used_bytes, used - 3 * page);
        assert!(pages.is_allocated(addr, 2));
        assert!(!pages.is_allocated(addr + 2 * page, 1));
        assert_eq!(heap.stats().pages_released, released + 3);
        assert_eq!(heap.find(addr + 2 * page), None);
        assert_eq!(run(&heap, &block), Ok(11));
        heap.check_invariants().unwrap();

        // Within a page it is still a block of a whole page of its own.
        heap.shrink(&mut block, 100).unwrap();
        assert_eq!(block.capacity(), page);
        let info = heap.find(addr + 200).unwrap();
        assert_eq!(
            (info.addr, info.size, info.capacity, info.large),
            (addr, 100, page, true)
        );
        let stats = heap.stats();
        assert_eq!((stats.large_blocks, stats.large_bytes), (1, page));
        assert_eq!(run(&heap, &block), Ok(11));
        heap.check_invariants().unwrap();

        // Freed, its one page is not kept for a large block (none asks for one page).
        heap.free(block).unwrap();
        assert_eq!(heap.stats().kept_large_blocks, 0);
        assert_eq!(heap.page_allocator().stats().used_bytes, used - 5 * page);
        heap.check_invariants().unwrap();
    }
}

#[test]
fn a_block_with_a_mapping_of_its_own_keeps_its_pages_until_freed() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let page = heap.page_size();
        let pages = heap.page_allocator().config().code_pages() + 2;
        let mut block = heap.alloc(pages * page).unwrap();
        emit_padded(&heap, &mut block, 12);
        let addr = block.addr();
        let used = heap.page_allocator().stats().used_bytes;
        heap.shrink(&mut block, 3 * page).unwrap();
        assert_eq!((block.size(), block.capacity()), (3 * page, pages * page));
        assert_cut_off(&heap, addr, 3 * page, pages * page);
        assert_eq!(heap.page_allocator().stats().used_bytes, used);
        assert_eq!(run(&heap, &block), Ok(12));
        heap.check_invariants().unwrap();
        // Freed, all its pages go (kept for reuse, whole, or back to the page allocator).
        heap.free(block).unwrap();
        let kept = heap.stats().kept_large_bytes;
        assert!(kept == 0 || kept == pages * page, "{kept}");
        let used_now = heap.page_allocator().stats().used_bytes;
        assert_eq!(used_now, used - pages * page + kept);
        heap.check_invariants().unwrap();
    }
}

#[test]
fn code_cut_off_traps_when_run() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let arch = heap.arch();
        let mut block = heap.alloc(600).unwrap();
        let second = 256;
        let (first_code, second_code) = (arch.encode_return_u32(1), arch.encode_return_u32(2));
        heap.write(&mut block, |w| {
            w.write(0, first_code.as_bytes())?;
            w.write(second, second_code.as_bytes())
        })
        .unwrap();
        let addr = heap.entry_point(&block).unwrap() + second;
        // SAFETY: the simulator decodes the code; it touches no process memory.
        assert_eq!(unsafe { heap.vm().os().call(addr) }, Ok(2));
        heap.shrink(&mut block, second).unwrap();
        // SAFETY: as above.
        let cut = unsafe { heap.vm().os().call(addr) };
        let trap = Fault {
            addr,
            kind: FaultKind::Trap,
        };
        assert_eq!(cut, Err(vm::Error::Fault(trap)));
        assert_eq!(run(&heap, &block), Ok(1));
        heap.free(block).unwrap();
    }
}

#[test]
fn bad_shrinks_are_typed_errors_that_change_nothing() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let mut block = heap.alloc(1000).unwrap();
        emit_padded(&heap, &mut block, 5);
        let addr = block.addr();
        let before = heap.stats();
        assert_eq!(heap.shrink(&mut block, 0), Err(Error::ZeroSize));
        assert_eq!(
            heap.shrink(&mut block, 1001),
            Err(Error::CannotGrow {
                size: 1000,
                new_size: 1001
            })
        );
        assert_eq!((block.size(), block.capacity()), (1000, 1024));
        assert_eq!(heap.stats().fills, before.fills);
        assert_eq!(read(&heap, addr + 900, 4), [0x5A; 4], "nothing cut off");
        heap.check_invariants().unwrap();

        // A handle whose block was freed by address is stale, even if a block of the same
        // size took its place.
        heap.free_address(addr).unwrap();
        let reused = heap.alloc(1000).unwrap();
        assert_eq!(reused.addr(), addr);
        assert_eq!(heap.shrink(&mut block, 10), Err(Error::StaleBlock { addr }));
        assert_eq!(heap.find(addr).unwrap().size, 1000);

        // Decommitted blocks can only be freed.
        heap.decommit_all().unwrap();
        let mut reused = reused;
        assert_eq!(
            heap.shrink(&mut reused, 10),
            Err(Error::Decommitted { addr })
        );
        assert_eq!(reused.size(), 1000);
        heap.free(reused).unwrap();
        heap.check_invariants().unwrap();
    }
}

#[test]
fn truncate_ends_a_session_s_block_after_the_code_written() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let page = heap.page_size();
        let code = heap.arch().encode_return_u32(31);
        let len = code.as_bytes().len();
        let (block, ()) = heap
            .emit(3 * page, |w| {
                w.write(0, code.as_bytes())?;
                w.truncate(len)?;
                assert_eq!(w.len(), len);
                let past = w.write(len, &[0]);
                assert!(matches!(past, Err(Error::OutOfBounds { .. })), "{past:?}");
                Ok(())
            })
            .unwrap();
        let large = heap.find(block.addr()).unwrap().large;
        assert_eq!((block.size(), large), (len, true));
        assert_eq!(run(&heap, &block), Ok(31));
        assert_cut_off(&heap, block.addr(), len, block.capacity());
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();

        // Truncating to nothing fails the session, and `emit` gives the block back.
        let live = heap.stats().live_blocks;
        let refused = heap.emit(500, |w| w.truncate(0));
        assert_eq!(refused.err(), Some(Error::ZeroSize));
        assert_eq!(heap.stats().live_blocks, live);
        heap.check_invariants().unwrap();
    }
}

/// Under `Protect` a large block's pages are read-write while its session is open, and the
/// page allocator takes back only execute-read pages: truncated there, it keeps them until
/// freed. The other strategies give them back.
#[test]
fn a_truncated_large_block_gives_its_pages_back_unless_they_are_open_under_protect() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let page = heap.page_size();
        let (block, ()) = heap
            .emit(4 * page, |w| {
                let code = w.arch().encode_return_u32(3);
                w.write(0, code.as_bytes())?;
                w.truncate(page + 1)
            })
            .unwrap();
        let kept = if heap.strategy() == WxStrategy::Protect {
            4
        } else {
            2
        };
        assert_eq!(block.capacity(), kept * page, "{:?}", heap.strategy());
        assert_eq!(run(&heap, &block), Ok(3));
        heap.check_invariants().unwrap();
        heap.free(block).unwrap();
        heap.check_invariants().unwrap();
    }
}

#[test]
fn a_shrunk_block_s_unwind_entry_describes_the_shorter_function() {
    for heap in every_strategy(SizeClasses::PowerOfTwo) {
        let arch = heap.arch();
        let frame = FrameDescription::standard(arch);
        let mut block = heap.alloc_with_unwind(1000, frame.clone()).unwrap();
        emit_padded(&heap, &mut block, 8);
        let entry = heap.unwind_entry(&block).unwrap();
        assert_eq!((entry.pc, entry.len), (block.addr(), 1000));
        heap.shrink(&mut block, 100).unwrap();
        let entry = heap.unwind_entry(&block).unwrap();
        assert_eq!((entry.pc, entry.len), (block.addr(), 100));
        heap.check_invariants().unwrap();

        // The frame's rows reach past two bytes (its prologue is longer): refused, nothing
        // changed.
        let refused = heap.shrink(&mut block, 2);
        assert!(matches!(refused, Err(Error::Unwind(_))), "{refused:?}");
        assert_eq!(block.size(), 100);
        assert_eq!(heap.unwind_entry(&block).unwrap().len, 100);
        assert_eq!(run(&heap, &block), Ok(8));
        heap.free(block).unwrap();

        // Truncated in its session, the entry is written for the truncated length.
        let (block, ()) = heap
            .emit_with_unwind(2000, frame, |w| {
                let code = w.arch().encode_return_u32(4);
                w.write(0, code.as_bytes())?;
                w.truncate(64)
            })
            .unwrap();
        assert_eq!(heap.unwind_entry(&block).unwrap().len, 64);
        assert_eq!(block.capacity(), 2048, "no further than its page's bucket");
        heap.free(block).unwrap();
        heap.check_invariants().unwrap();
    }
}
