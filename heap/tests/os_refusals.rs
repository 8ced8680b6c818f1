//! A system call refused in the middle of a heap operation must leave the heap consistent
//! (`check_invariants`) and usable. The cases here were found by the `heap_ops` fuzz
//! target.

use codeheap::vm::SysCall;
use codeheap::{Heap, HeapConfig, SimOs, WxStrategy};

/// Under `Protect`, the `mprotect` that makes the page executable again at the end of a
/// write session fails. The page must not be left read-write with no session open: the
/// heap then refuses every later write and free on that page (`ProtectionMismatch`, since
/// it expects the page executable), and the block can never be freed.
#[test]
fn a_refused_mprotect_closing_a_session_leaves_the_page_usable() {
    let heap = Heap::with_config(
        SimOs::linux(),
        HeapConfig::with_strategy(WxStrategy::Protect),
    )
    .unwrap();
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
    let heap = Heap::with_config(
        SimOs::linux(),
        HeapConfig::with_strategy(WxStrategy::DualMap),
    )
    .unwrap();
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
