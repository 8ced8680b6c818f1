//! `Heap::check_invariants` passes through every state a heap goes through (small blocks
//! of every bucket, large blocks, open write sessions, spare and parked pages, frees), on
//! every strategy of the simulated OS, and catches a block whose chunk was marked free
//! behind the heap's back.

use codeheap::{Block, Error, Heap, HeapConfig, Protection, SimOs, WxStrategy};

fn heaps() -> Vec<(&'static str, Heap<SimOs>)> {
    let linux = |strategy| Heap::with_config(SimOs::linux(), HeapConfig::with_strategy(strategy));
    vec![
        (
            "apple map-jit",
            Heap::with_config(SimOs::apple(), HeapConfig::default()).unwrap(),
        ),
        ("linux dual-map", linux(WxStrategy::DualMap).unwrap()),
        ("linux protect", linux(WxStrategy::Protect).unwrap()),
        ("linux rwx", linux(WxStrategy::Rwx).unwrap()),
    ]
}

fn emit(heap: &Heap<SimOs>, block: &mut Block, value: u32) {
    let code = heap.arch().encode_return_u32(value);
    heap.write(block, |w| w.write(0, code.as_bytes())).unwrap();
}

fn check(label: &str, heap: &Heap<SimOs>, step: &str) {
    if let Err(err) = heap.check_invariants() {
        panic!("{label}, {step}: {err}");
    }
}

#[test]
fn a_heap_in_every_state_passes() {
    for (label, heap) in heaps() {
        check(label, &heap, "new");
        let page = heap.page_size();
        let mut sizes = vec![13, 100, 129, 300, 700, 1500];
        sizes.extend([page / 2 + 1, page, page + 1, 3 * page]);
        let mut blocks: Vec<Block> = sizes.iter().map(|&s| heap.alloc(s).unwrap()).collect();
        check(label, &heap, "allocated");
        for (i, block) in blocks.iter_mut().enumerate().step_by(2) {
            emit(&heap, block, i as u32);
        }
        check(label, &heap, "some finalized");

        // A write session open on a small and on a large block: under Protect their pages
        // are read-write meanwhile.
        let (small, rest) = blocks.split_at_mut(1);
        heap.write(&mut small[0], |_| {
            check(label, &heap, "inside a small block's session");
            heap.write(rest.last_mut().unwrap(), |_| {
                check(label, &heap, "inside two sessions");
                Ok(())
            })
        })
        .unwrap();
        // An abandoned session leaves its block unfinalized.
        let abandoned = heap.write(&mut blocks[1], |w| {
            w.write(0, &[0x90])?;
            Err::<(), _>(Error::ZeroSize)
        });
        assert_eq!(abandoned, Err(Error::ZeroSize));
        check(label, &heap, "after an abandoned session");

        // Free every other block, then the rest: full pages go back to their buckets,
        // emptied pages become the spare or go back.
        let mut odd = Vec::new();
        for (i, block) in blocks.into_iter().enumerate() {
            if i % 2 == 0 {
                heap.free(block).unwrap();
                check(label, &heap, &format!("freed block {i}"));
            } else {
                odd.push(block);
            }
        }
        assert!(heap.stats().spare_pages <= codeheap::SPARE_PAGES);

        let survivor = heap.alloc(200).unwrap();
        heap.decommit_all().unwrap();
        check(label, &heap, "after decommit_all");
        assert!(heap.stats().parked_pages > 0, "{label}: pages are parked");
        let fresh = heap.alloc(200).unwrap();
        check(label, &heap, "allocating after decommit_all");
        for block in odd.into_iter().chain([survivor, fresh]) {
            heap.free(block).unwrap();
            check(label, &heap, "freeing after decommit_all");
        }
        let stats = heap.stats();
        assert_eq!(stats.live_blocks, 0, "{label}");
        assert_eq!(stats.parked_pages, 0, "{label}");
    }
}

#[test]
fn a_chunk_marked_free_behind_the_heaps_back_is_caught() {
    for (label, heap) in heaps() {
        let _before = heap.alloc(128).unwrap();
        let victim = heap.alloc(256).unwrap();
        let _after = heap.alloc(128).unwrap();
        check(label, &heap, "before the corruption");

        assert!(heap.corrupt_chunk_bitmap_for_test(victim.addr()));
        let err = heap
            .check_invariants()
            .expect_err("a block with a free chunk must be caught");
        let page = victim.addr() - victim.addr() % heap.page_size();
        let names_it = [victim.addr(), page]
            .iter()
            .any(|addr| err.contains(&format!("{addr:#x}")));
        assert!(
            names_it && err.contains("free"),
            "{label}: the report names the block or its page, and what is wrong: {err}"
        );

        // Left alone, the corruption hands the same memory out twice; still caught.
        let _overlapping = heap.alloc(128).unwrap();
        assert!(heap.check_invariants().is_err(), "{label}");
    }
}

#[test]
fn the_hook_refuses_what_is_not_a_small_block() {
    let (_, heap) = heaps().remove(0);
    let large = heap.alloc(3 * heap.page_size()).unwrap();
    let small = heap.alloc(64).unwrap();
    assert!(!heap.corrupt_chunk_bitmap_for_test(large.addr()));
    assert!(!heap.corrupt_chunk_bitmap_for_test(small.addr() + 128));
    heap.check_invariants().unwrap();
}

/// A page of a large block, live or kept after its free, whose state in the OS layer is
/// changed behind the heap's back (decommitted, or opened for writing) is named by the
/// check, wherever it lies in the block: the check asks per run of same-state pages, and
/// the run from the block's start ends at the changed page.
#[test]
fn a_large_blocks_page_changed_behind_the_heaps_back_is_caught() {
    let linux = || {
        Heap::with_config(
            SimOs::linux(),
            HeapConfig::with_strategy(WxStrategy::DualMap),
        )
        .unwrap()
    };
    let pages = 5;
    for kept in [false, true] {
        for changed_page in [0, 2, pages - 1] {
            for decommit in [true, false] {
                let heap = linux();
                let page = heap.page_size();
                let block = heap.alloc(pages * page).unwrap();
                let addr = block.addr();
                let _live = if kept {
                    heap.free(block).unwrap();
                    assert_eq!(heap.stats().kept_large_blocks, 1);
                    None
                } else {
                    Some(block)
                };
                check("dual-map", &heap, "before the change");

                let at = addr + changed_page * page;
                if decommit {
                    heap.vm().decommit(at, page).unwrap();
                } else {
                    heap.vm().protect(at, page, Protection::ReadWrite).unwrap();
                }
                let err = heap.check_invariants().unwrap_err();
                let case = format!("kept {kept}, page {changed_page}, decommit {decommit}");
                assert!(err.contains(&format!("page {at:#x}")), "{case}: {err}");
                if !decommit {
                    heap.vm()
                        .protect(at, page, Protection::ExecuteRead)
                        .unwrap();
                    check("dual-map", &heap, &format!("{case}, closed again"));
                }
            }
        }
    }
}
