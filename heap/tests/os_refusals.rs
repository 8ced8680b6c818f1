//! A system call refused in the middle of a heap operation must leave the heap consistent
//! (`check_invariants`) and usable. The cases here were found by the `heap_ops` fuzz
//! target.

use codeheap::vm::{Protection, SysCall};
use std::sync::Arc;

use codeheap::{Error, FrameDescription, Heap, HeapConfig, RecordingRegistrar, SimOs, WxStrategy};

fn linux(strategy: WxStrategy) -> Heap<SimOs> {
    Heap::with_config(SimOs::linux(), HeapConfig::with_strategy(strategy)).unwrap()
}

/// Under `Protect`, the `mprotect` that makes the page executable again at the end of a
/// write session fails. The page must not be left read-write with no session open: the
/// heap then refuses every later write and free on that page (`ProtectionMismatch`, since
/// it expects the page executable), and the block can never be freed.
#[test]
fn a_refused_mprotect_closing_a_session_leaves_the_page_usable() {
    let heap = linux(WxStrategy::Protect);
    let mut block = heap.alloc(64).unwrap();
    let code = heap.arch().encode_return_u32(5);
    let refused = heap.write(&mut block, |w| {
        // The session's page is open; the next mprotect is the one that closes it.
        heap.vm().os().fail_next(SysCall::Mprotect, libc::EPERM);
        w.write(0, code.as_bytes())
    });
    assert!(refused.is_err());
    assert_eq!(heap.check_invariants(), Ok(()));
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    // SAFETY: the simulator decodes `return 5`; nothing of the process runs.
    assert_eq!(unsafe { heap.call(&block) }.unwrap(), 5);
    heap.free(block).unwrap();
}

/// `decommit_all` refused by the OS on its second page: the first page is decommitted, but
/// its block is still finalized, so `entry_point` hands out an address in decommitted
/// memory (a real call would fault), and the heap's invariants no longer hold.
#[test]
fn decommit_all_refused_midway_leaves_no_runnable_block_on_a_decommitted_page() {
    let heap = Heap::with_config(SimOs::apple(), HeapConfig::default()).unwrap();
    let code = heap.arch().encode_return_u32(5);
    let mut small = heap.alloc(64).unwrap();
    let mut other = heap.alloc(4000).unwrap();
    assert_ne!(
        small.addr() / heap.page_size(),
        other.addr() / heap.page_size(),
        "two pages"
    );
    heap.write(&mut small, |w| w.write(0, code.as_bytes()))
        .unwrap();
    heap.write(&mut other, |w| w.write(0, code.as_bytes()))
        .unwrap();
    // The first page's decommit (madvise on MAP_JIT) goes through, the second's fails.
    heap.vm().os().fail_after(1, libc::ENOMEM);
    assert!(heap.decommit_all().is_err());
    heap.vm().os().clear_failures();
    assert_eq!(heap.check_invariants(), Ok(()));
    for block in [&small, &other] {
        if let Ok(entry) = heap.entry_point(block) {
            let info = heap.vm().query(entry).unwrap();
            assert!(
                matches!(info.state, codeheap::vm::PageState::Committed(_)),
                "entry point {entry:#x} handed out into decommitted memory"
            );
        }
    }
}

/// The page allocator refuses to take back a page parked by `decommit_all` when its last
/// block is freed (here `fallocate`, which gives a dual-mapped page's memory back, fails).
/// The heap must not keep that page as its spare: it has no memory, so the next block
/// allocated on it can never be written.
#[test]
fn a_refused_release_of_a_parked_page_does_not_make_it_the_spare() {
    let heap = linux(WxStrategy::DualMap);
    let block = heap.alloc(64).unwrap();
    heap.decommit_all().unwrap();
    heap.vm().os().fail_next(SysCall::Fallocate, libc::ENOMEM);
    let freed = heap.free(block);
    heap.vm().os().clear_failures();
    assert_eq!(heap.check_invariants(), Ok(()), "free gave {freed:?}");
    let mut next = heap.alloc(64).unwrap();
    let code = heap.arch().encode_return_u32(5);
    heap.write(&mut next, |w| w.write(0, code.as_bytes()))
        .unwrap();
}

/// Under `Protect` a free opens its block's page to fill it with traps and closes it again.
/// If the open is refused, nothing is filled and the block stays live and runnable; if only
/// the close is refused, the traps are in and the free goes through, the page is recorded
/// open, and the next close on it tries again.
#[test]
fn a_free_whose_mprotect_is_refused_is_undone_or_finished() {
    let heap = linux(WxStrategy::Protect);
    let code = heap.arch().encode_return_u32(9);
    let kept = heap.emit_code(code.as_bytes()).unwrap();
    let block = heap.emit_code(code.as_bytes()).unwrap();
    let addr = block.addr();
    let live = heap.stats().live_blocks;

    heap.vm().os().fail_next(SysCall::Mprotect, libc::EPERM);
    let refused = heap.free_address(addr);
    assert!(refused.is_err());
    assert_eq!(heap.check_invariants(), Ok(()));
    assert_eq!(heap.stats().live_blocks, live, "the block was not freed");
    // SAFETY: the simulator decodes `return 9`; nothing of the process runs.
    assert_eq!(unsafe { heap.call(&block) }, Ok(9), "nor trap-filled");

    // The open succeeds, the close after the fill is refused: the free is done anyway.
    heap.vm().os().fail_after(1, libc::EPERM);
    let freed = heap.free(block);
    heap.vm().os().clear_failures();
    assert_eq!(freed, Ok(()));
    assert_eq!(heap.stats().live_blocks, live - 1);
    assert_eq!(heap.check_invariants(), Ok(()));
    assert_eq!(heap.find(addr), None);
    let page = addr - addr % heap.page_size();
    let os = heap.vm().os();
    assert_eq!(os.protection_at(page), Some(Protection::ReadWrite));

    // The page left open is closed by its next write.
    let again = heap.emit_code(code.as_bytes()).unwrap();
    assert_eq!(os.protection_at(page), Some(Protection::ExecuteRead));
    assert_eq!(heap.check_invariants(), Ok(()));
    // SAFETY: as above.
    assert_eq!(unsafe { heap.call(&again) }, Ok(9));
    // SAFETY: as above.
    assert_eq!(unsafe { heap.call(&kept) }, Ok(9));
    heap.free(again).unwrap();
    heap.free(kept).unwrap();
    assert_eq!(heap.check_invariants(), Ok(()));
}

/// The OS refuses to unmap a large block's own mapping: the free fails, and the block stays
/// allocated, trap-filled and not runnable (its entry point refused, not handed out for
/// traps); a second free goes through.
#[test]
fn a_large_block_whose_unmap_is_refused_stays_allocated_and_not_runnable() {
    for strategy in [WxStrategy::DualMap, WxStrategy::Protect, WxStrategy::Rwx] {
        let heap = linux(strategy);
        let mut code = vec![0u8; 40 * heap.page_size()];
        let ret = heap.arch().encode_return_u32(5);
        code[..ret.as_bytes().len()].copy_from_slice(ret.as_bytes());
        let block = heap.emit_code(&code).unwrap();
        let (addr, live) = (block.addr(), heap.stats().live_blocks);
        assert_eq!(heap.entry_point(&block), Ok(addr));

        heap.vm().os().fail_next(SysCall::Munmap, libc::EPERM);
        let refused = heap.free_address(addr);
        heap.vm().os().clear_failures();
        assert!(refused.is_err(), "{strategy}");
        assert_eq!(heap.stats().live_blocks, live, "{strategy}");
        assert_eq!(
            heap.entry_point(&block),
            Err(Error::NotFinalized { addr }),
            "{strategy}"
        );
        assert_eq!(heap.check_invariants(), Ok(()));

        heap.free(block).unwrap();
        assert_eq!(heap.stats().live_blocks, live - 1);
        assert_eq!(heap.find(addr), None);
        assert_eq!(heap.check_invariants(), Ok(()));
    }
}

/// `emit_code_with_unwind` whose copy is refused (under `Protect`, the `mprotect` that
/// opens the page) fails and leaves nothing: no block, no entry registered for code that
/// was never copied.
#[test]
fn an_emit_with_an_entry_whose_copy_is_refused_registers_nothing() {
    let registrar = Arc::new(RecordingRegistrar::new());
    let config = HeapConfig::with_strategy(WxStrategy::Protect);
    let heap = Heap::with_registrar(SimOs::linux(), config, registrar.clone()).unwrap();
    let code = heap.arch().encode_return_u32(6);
    let frame = FrameDescription::standard(heap.arch());
    let kept = heap
        .emit_code_with_unwind(code.as_bytes(), frame.clone())
        .unwrap();
    let live = heap.stats().live_blocks;

    heap.vm().os().fail_next(SysCall::Mprotect, libc::EPERM);
    let refused = heap.emit_code_with_unwind(code.as_bytes(), frame.clone());
    heap.vm().os().clear_failures();
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(heap.stats().live_blocks, live);
    assert_eq!(registrar.live().len(), 1, "only the first block's entry");
    assert_eq!(heap.check_invariants(), Ok(()));

    let again = heap.emit_code_with_unwind(code.as_bytes(), frame).unwrap();
    assert_eq!(registrar.live().len(), 2);
    for block in [&kept, &again] {
        // SAFETY: the simulator decodes `return 6`; nothing of the process runs.
        assert_eq!(unsafe { heap.call(block) }, Ok(6));
    }
}
