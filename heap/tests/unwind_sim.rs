//! The life of a block's unwind entry, on the simulated OS with a recording registrar:
//! written and registered at finalize, deregistered before the block is freed, its slot
//! reused; deregistered newest first on decommit_all and on drop; typed errors for frames
//! that do not fit and for entries no secondary area can hold.

use std::sync::Arc;

use codeheap::pages::{self, PageAllocatorConfig};
use codeheap::xdata::{self, EhFrameEntry};
use codeheap::{
    Arch, Block, CfaOp, Error, FrameDescription, Heap, HeapConfig, RecordingRegistrar, SimOs,
    WrittenEntry,
};

fn heap_with(config: HeapConfig) -> (Heap<SimOs>, Arc<RecordingRegistrar>) {
    let registrar = Arc::new(RecordingRegistrar::new());
    let heap = Heap::with_registrar(SimOs::apple(), config, registrar.clone()).unwrap();
    (heap, registrar)
}

fn emit(heap: &Heap<SimOs>, size: usize, frame: FrameDescription, value: u32) -> Block {
    let mut block = heap.alloc_with_unwind(size, frame).unwrap();
    let code = heap.arch().encode_return_u32(value);
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    block
}

fn stored_bytes(heap: &Heap<SimOs>, entry: &WrittenEntry, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    heap.vm().read(entry.addr, &mut bytes).unwrap();
    bytes
}

#[test]
fn entries_are_registered_at_finalize_and_deregistered_before_free() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let frame = FrameDescription::standard(Arch::Aarch64);
    let mut block = heap.alloc_with_unwind(200, frame.clone()).unwrap();
    assert!(
        registrar.live().is_empty(),
        "nothing to unwind before the code exists"
    );
    assert_eq!(heap.unwind_entry(&block), None);

    let code = heap.arch().encode_return_u32(5);
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    let entry = heap.unwind_entry(&block).unwrap();
    assert_eq!((entry.pc, entry.len), (block.addr(), 200));
    assert_eq!(registrar.live(), [entry]);
    assert_eq!(registrar.lookup(block.addr() + 100), Some(entry));

    let expected = EhFrameEntry::build(&frame, block.addr() as u64, 200).unwrap();
    assert_eq!(
        stored_bytes(&heap, &entry, expected.bytes().len()),
        expected.bytes()
    );
    assert_eq!(entry.fde, entry.addr + expected.fde_offset());
    let segment = pages::PageAllocator::page_size(heap.page_allocator()) * 30;
    let block_segment = block.addr() - block.addr() % 0x10000;
    assert!(
        entry.addr >= block_segment + segment,
        "the entry lives in the secondary area"
    );

    // Patching keeps the one registration.
    heap.write(&mut block, |w| w.write(0, code.as_bytes()))
        .unwrap();
    assert_eq!(registrar.log().len(), 1);

    heap.free(block).unwrap();
    assert!(registrar.live().is_empty());
    assert_eq!(registrar.log(), [(true, entry), (false, entry)]);
    assert_eq!(heap.page_allocator().stats().secondary_slots_used, 0);
}

#[test]
fn a_new_function_at_a_freed_address_gets_its_own_entry() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let first = emit(&heap, 64, FrameDescription::standard(Arch::Aarch64), 1);
    let (addr, old) = (first.addr(), heap.unwind_entry(&first).unwrap());
    heap.free(first).unwrap();
    let other = FrameDescription::new(Arch::Aarch64).row(4, CfaOp::DefCfaOffset(32));
    let second = emit(&heap, 64, other.clone(), 2);
    assert_eq!(second.addr(), addr);
    let new = heap.unwind_entry(&second).unwrap();
    assert_eq!(new.addr, old.addr, "the slot is reused");
    assert_eq!(registrar.lookup(addr), Some(new));
    let expected = EhFrameEntry::build(&other, addr as u64, 64).unwrap();
    assert_eq!(
        stored_bytes(&heap, &new, expected.bytes().len()),
        expected.bytes()
    );
    assert_eq!(registrar.live(), [new], "no stale registration");
}

#[test]
fn teardown_deregisters_newest_first() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let blocks: Vec<Block> = (0..5)
        .map(|i| {
            emit(
                &heap,
                64 + 64 * i,
                FrameDescription::standard(Arch::Aarch64),
                i as u32,
            )
        })
        .collect();
    let registered: Vec<WrittenEntry> = blocks
        .iter()
        .map(|b| heap.unwind_entry(b).unwrap())
        .collect();
    heap.decommit_all().unwrap();
    let deregistered: Vec<WrittenEntry> = registrar
        .log()
        .into_iter()
        .filter(|(on, _)| !on)
        .map(|(_, e)| e)
        .collect();
    let newest_first: Vec<WrittenEntry> = registered.iter().rev().copied().collect();
    assert_eq!(deregistered, newest_first);
    for block in blocks {
        heap.free(block).unwrap();
    }
    assert_eq!(heap.page_allocator().stats().secondary_slots_used, 0);

    let (heap, registrar) = heap_with(HeapConfig::default());
    let kept: Vec<Block> = (0..3)
        .map(|i| emit(&heap, 100, FrameDescription::standard(Arch::Aarch64), i))
        .collect();
    let registered: Vec<WrittenEntry> =
        kept.iter().map(|b| heap.unwind_entry(b).unwrap()).collect();
    drop(heap);
    assert!(registrar.live().is_empty(), "drop deregisters everything");
    let deregistered: Vec<WrittenEntry> = registrar
        .log()
        .into_iter()
        .filter(|(on, _)| !on)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        deregistered,
        registered.into_iter().rev().collect::<Vec<_>>()
    );
    drop(kept);
}

#[test]
fn a_segment_out_of_slots_sends_blocks_to_another() {
    // Four 4 KiB slots per segment.
    let config = HeapConfig {
        pages: PageAllocatorConfig {
            secondary_pages: 1,
            secondary_slot_size: 4096,
            ..PageAllocatorConfig::default()
        },
        ..HeapConfig::default()
    };
    let (heap, _) = heap_with(config);
    let blocks: Vec<Block> = (0..5)
        .map(|i| emit(&heap, 64, FrameDescription::standard(Arch::Aarch64), i))
        .collect();
    let segment = |b: &Block| heap.unwind_entry(b).unwrap().addr & !0xFFFF;
    assert!(
        blocks[..4]
            .iter()
            .all(|b| segment(b) == segment(&blocks[0]))
    );
    assert_ne!(
        segment(&blocks[4]),
        segment(&blocks[0]),
        "the fifth goes elsewhere"
    );
    // The first segment's page still serves blocks without unwind information: it still
    // counts in its bucket, and a plain block needs no new page.
    assert_eq!(heap.stats().buckets[0].pages, 2);
    let acquired = heap.stats().pages_acquired;
    let _plain = heap.alloc(64).unwrap();
    assert_eq!(heap.stats().pages_acquired, acquired);
    let stats = heap.page_allocator().stats();
    assert_eq!(stats.secondary_slots_used, 5);
    assert_eq!(
        stats.segments.full, 1,
        "slots exhausted: the first segment counts as full"
    );
}

/// Four 4 KiB slots per segment (16 KiB simulated Apple pages, one secondary page).
fn four_slots_per_segment() -> HeapConfig {
    HeapConfig {
        pages: PageAllocatorConfig {
            secondary_pages: 1,
            secondary_slot_size: 4096,
            ..PageAllocatorConfig::default()
        },
        ..HeapConfig::default()
    }
}

#[test]
fn pages_whose_segment_is_out_of_slots_are_asked_once() {
    // How pages are filed: without kept freed blocks, which would be asked first.
    let (heap, registrar) = heap_with(HeapConfig {
        keep_freed_blocks: false,
        ..four_slots_per_segment()
    });
    let frame = FrameDescription::standard(Arch::Aarch64);
    // 40 blocks: ten segments out of slots, each with a page that has room for chunks.
    let mut blocks: Vec<Block> = (0..40).map(|i| emit(&heap, 64, frame.clone(), i)).collect();
    let before = heap.stats();
    // Churn, oldest first: every free gives one segment a slot back.
    for step in 0..400 {
        let i = step % blocks.len();
        let new = emit(&heap, 64, frame.clone(), step as u32);
        heap.free(core::mem::replace(&mut blocks[i], new)).unwrap();
    }
    let after = heap.stats();
    let allocs = after.allocs - before.allocs;
    let probes = after.secondary_probes - before.secondary_probes;
    // A page is asked again only after a freed entry gave its segment room: at most one
    // refusal per free on top of one request per allocation (asking every page of the
    // bucket until one has room made 3.5 requests per allocation here, more the larger
    // the heap).
    assert!(
        probes <= 2 * allocs,
        "{probes} slot requests for {allocs} allocations"
    );
    assert_eq!(registrar.live().len(), 40);
    heap.check_invariants().unwrap();

    // A freed entry puts its page back in front: the next block with an entry goes there,
    // asked once.
    let page = |addr: usize| addr & !(heap.page_size() - 1);
    let freed_page = page(blocks[7].addr());
    heap.free(blocks.swap_remove(7)).unwrap();
    let probes = heap.stats().secondary_probes;
    let again = emit(&heap, 64, frame, 99);
    assert_eq!(page(again.addr()), freed_page);
    assert_eq!(heap.stats().secondary_probes, probes + 1);
    heap.check_invariants().unwrap();
}

/// A page set aside for want of slots goes back to its bucket when a block with an entry
/// on it is freed, not when one without: that frees no slot, and the next block with an
/// entry would ask its segment in vain.
#[test]
fn a_free_that_frees_no_slot_leaves_a_page_without_room_aside() {
    let (heap, _registrar) = heap_with(HeapConfig {
        keep_freed_blocks: false,
        ..four_slots_per_segment()
    });
    let frame = FrameDescription::standard(Arch::Aarch64);
    let page = |addr: usize| addr & !(heap.page_size() - 1);
    let full: Vec<Block> = (0..4).map(|i| emit(&heap, 64, frame.clone(), i)).collect();
    let plain = heap.alloc(64).unwrap();
    let first = page(plain.addr());
    assert!(full.iter().all(|block| page(block.addr()) == first));
    // Its segment's four slots are taken: the page is asked, refused and set aside; the
    // block goes to a page of a new segment, whose slot comes with it.
    let probes = heap.stats().secondary_probes;
    let elsewhere = emit(&heap, 64, frame.clone(), 4);
    assert_ne!(page(elsewhere.addr()), first);
    assert_eq!(heap.stats().secondary_probes, probes + 1);

    heap.free(plain).unwrap();
    let probes = heap.stats().secondary_probes;
    let next = emit(&heap, 64, frame, 5);
    assert_eq!(page(next.addr()), page(elsewhere.addr()));
    assert_eq!(
        heap.stats().secondary_probes,
        probes + 1,
        "the page without room was not asked again"
    );
    heap.check_invariants().unwrap();
}

/// A block with an entry, freed, is kept like any other and taken back by the next block
/// of its size with an entry if its segment has a slot for it: its old entry is gone from
/// the unwinder, the new one registered at the same address. A kept block whose segment
/// has no slot stays kept.
#[test]
fn kept_blocks_take_blocks_with_entries_where_their_segment_has_room() {
    let (heap, registrar) = heap_with(four_slots_per_segment());
    let frame = FrameDescription::standard(Arch::Aarch64);
    let _neighbour = emit(&heap, 64, frame.clone(), 1);
    let old = emit(&heap, 64, frame.clone(), 2);
    let addr = old.addr();
    heap.free(old).unwrap();
    assert_eq!(heap.stats().kept_blocks, 1);
    assert_eq!(registrar.live().len(), 1, "the freed block's entry is gone");
    let probes = heap.stats().secondary_probes;
    let new = emit(&heap, 64, frame.clone(), 3);
    assert_eq!(
        new.addr(),
        addr,
        "the kept block, with a slot of its segment"
    );
    assert_eq!(heap.stats().secondary_probes, probes + 1);
    assert_eq!(heap.stats().kept_blocks, 0);
    let entry = heap.unwind_entry(&new).unwrap();
    assert_eq!(entry.pc, addr);
    assert_eq!(registrar.live().len(), 2);
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { heap.call(&new) }, Ok(3));
    heap.check_invariants().unwrap();

    // With the segment's four slots taken, a kept block there is refused when a block with
    // an entry asks: it goes back to its page, which is filed as having no room, so the
    // segment is not asked again by the next block with an entry.
    let _third = emit(&heap, 64, frame.clone(), 4);
    let _fourth = emit(&heap, 64, frame.clone(), 5);
    let plain = heap.alloc(64).unwrap();
    let plain_addr = plain.addr();
    assert_eq!(
        plain_addr & !(heap.page_size() - 1),
        addr & !(heap.page_size() - 1),
        "on the same page"
    );
    heap.free(plain).unwrap();
    assert_eq!(heap.stats().kept_blocks, 1);
    let elsewhere = emit(&heap, 64, frame.clone(), 6);
    assert_ne!(elsewhere.addr(), plain_addr, "no slot in that segment");
    assert_eq!(heap.stats().kept_blocks, 0, "given back to its page");
    assert_eq!(heap.find(plain_addr), None);
    heap.check_invariants().unwrap();
    let probes = heap.stats().secondary_probes;
    let next = emit(&heap, 64, frame, 7);
    assert_eq!(
        heap.stats().secondary_probes,
        probes + 1,
        "only the new segment's page is asked"
    );
    assert_ne!(
        next.addr() & !(heap.page_size() - 1),
        addr & !(heap.page_size() - 1)
    );
    heap.check_invariants().unwrap();
}

/// A kept large block is taken by a block with an entry of its page count if its segment
/// has a slot; if not, it goes back to the page allocator (so no later block asks that
/// segment for it again) and the block gets pages elsewhere.
#[test]
fn kept_large_blocks_take_blocks_with_entries_where_their_segment_has_room() {
    let (heap, registrar) = heap_with(four_slots_per_segment());
    let frame = FrameDescription::standard(Arch::Aarch64);
    let page = heap.page_size();
    let old = emit(&heap, 2 * page + 1, frame.clone(), 1);
    let addr = old.addr();
    heap.free(old).unwrap();
    assert_eq!(heap.stats().kept_large_blocks, 1);
    assert!(
        registrar.live().is_empty(),
        "the freed block's entry is gone"
    );
    let new = emit(&heap, 2 * page + 1, frame.clone(), 2);
    assert_eq!(
        new.addr(),
        addr,
        "the kept block, with a slot of its segment"
    );
    assert_eq!(heap.unwind_entry(&new).unwrap().pc, addr);
    assert_eq!(registrar.live().len(), 1);
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { heap.call(&new) }, Ok(2));
    heap.check_invariants().unwrap();

    // With the segment's four slots taken by small blocks on a page of the same segment,
    // the kept block is refused and given back.
    heap.free(new).unwrap();
    let small: Vec<Block> = (0..4).map(|i| emit(&heap, 64, frame.clone(), i)).collect();
    assert!(
        !heap.page_allocator().can_alloc_secondary(addr),
        "its segment is out of slots"
    );
    let before = heap.stats();
    assert_eq!(before.kept_large_blocks, 1);
    let elsewhere = emit(&heap, 2 * page + 1, frame.clone(), 3);
    assert_ne!(elsewhere.addr(), addr);
    let after = heap.stats();
    assert_eq!(after.kept_large_blocks, 0, "given back");
    assert_eq!(after.pages_released, before.pages_released + 3);
    assert!(!heap.page_allocator().is_allocated(addr, 3));
    heap.check_invariants().unwrap();
    drop(small);
}

#[test]
fn pages_out_of_unwind_room_still_take_plain_blocks() {
    let (heap, _) = heap_with(four_slots_per_segment());
    let frame = FrameDescription::standard(Arch::Aarch64);
    // Five blocks with entries: the fifth finds the first page's segment out of slots and
    // takes a page in a new segment; the first page is set aside for unwind requests.
    let with_entries: Vec<Block> = (0..5).map(|i| emit(&heap, 64, frame.clone(), i)).collect();
    let page = |addr: usize| addr & !(heap.page_size() - 1);
    let (first, second) = (page(with_entries[0].addr()), page(with_entries[4].addr()));
    assert_ne!(first, second);
    // Fill the second page with plain blocks; the next plain block goes to the first page
    // (not to a new one).
    let chunks = heap.page_size() / codeheap::CHUNK;
    let plain: Vec<Block> = (0..chunks - 1).map(|_| heap.alloc(64).unwrap()).collect();
    assert!(plain.iter().all(|b| page(b.addr()) == second));
    let acquired = heap.stats().pages_acquired;
    let next = heap.alloc(64).unwrap();
    assert_eq!(page(next.addr()), first);
    assert_eq!(heap.stats().pages_acquired, acquired);
    heap.check_invariants().unwrap();
}

#[test]
fn frames_that_do_not_fit_are_typed_errors() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let past_end = FrameDescription::new(Arch::Aarch64).row(64, CfaOp::DefCfaOffset(16));
    assert_eq!(
        heap.alloc_with_unwind(32, past_end),
        Err(Error::Unwind(xdata::Error::RowPastEnd {
            code_offset: 64,
            len: 32
        }))
    );
    assert_eq!(
        heap.alloc_with_unwind(32, FrameDescription::standard(Arch::X86_64)),
        Err(Error::Unwind(xdata::Error::ArchMismatch {
            frame: Arch::X86_64,
            heap: Arch::Aarch64
        }))
    );
    let mut huge = FrameDescription::new(Arch::Aarch64);
    for i in 0..20_000u32 {
        huge.push(i * 4, CfaOp::DefCfaOffset(u64::from(i % 2) * 16));
    }
    let size = EhFrameEntry::size_for(&huge).unwrap();
    assert!(matches!(
        heap.alloc_with_unwind(80_000, huge),
        Err(Error::Pages(pages::Error::SecondaryTooLarge { bytes, .. })) if bytes == size
    ));
    assert_eq!(heap.stats().live_blocks, 0, "nothing allocated");
    assert!(registrar.log().is_empty());
}

/// `emit_with_unwind` registers the entry when the block comes back finalized; a failing
/// closure leaves no block, no slot and no registration behind.
#[test]
fn emit_with_unwind_registers_or_leaves_nothing() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let frame = FrameDescription::standard(Arch::Aarch64);
    let code = heap.arch().encode_return_u32(8);
    let (block, ()) = heap
        .emit_with_unwind(120, frame.clone(), |w| w.write(0, code.as_bytes()))
        .unwrap();
    let entry = heap.unwind_entry(&block).unwrap();
    assert_eq!((entry.pc, entry.len), (block.addr(), 120));
    assert_eq!(registrar.live(), [entry]);
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { heap.call(&block) }, Ok(8));

    let slots = heap.page_allocator().stats().secondary_slots_used;
    let failed = heap.emit_with_unwind(120, frame.clone(), |w| w.write(118, &[0; 4]));
    assert!(matches!(failed, Err(Error::OutOfBounds { .. })));
    assert_eq!(heap.page_allocator().stats().secondary_slots_used, slots);
    assert_eq!(registrar.live(), [entry]);
    assert_eq!(heap.stats().live_blocks, 1);

    let wrong_arch = FrameDescription::standard(Arch::X86_64);
    let refused = heap.emit_with_unwind(120, wrong_arch, |_| Ok(()));
    assert!(matches!(refused, Err(Error::Unwind(_))), "{refused:?}");
    heap.free(block).unwrap();
    assert!(registrar.live().is_empty());
    heap.check_invariants().unwrap();
}

/// `emit_code_with_unwind` registers the entry of the function it copies in; a frame that
/// does not fit the function, or is for another architecture, leaves no block, slot or
/// registration behind.
#[test]
fn emit_code_with_unwind_registers_or_leaves_nothing() {
    let (heap, registrar) = heap_with(HeapConfig::default());
    let frame = FrameDescription::standard(Arch::Aarch64);
    let mut code = vec![0; 40];
    code[..8].copy_from_slice(heap.arch().encode_return_u32(6).as_bytes());
    let block = heap.emit_code_with_unwind(&code, frame.clone()).unwrap();
    let entry = heap.unwind_entry(&block).unwrap();
    assert_eq!((entry.pc, entry.len), (block.addr(), 40));
    assert_eq!(registrar.live(), [entry]);
    // SAFETY: the simulator decodes the code; it touches no process memory.
    assert_eq!(unsafe { heap.call(&block) }, Ok(6));

    let slots = heap.page_allocator().stats().secondary_slots_used;
    // The standard frame's last row is at byte 8: a function of 4 bytes cannot hold it.
    let too_short = heap.emit_code_with_unwind(&code[..4], frame);
    assert!(matches!(too_short, Err(Error::Unwind(_))), "{too_short:?}");
    let wrong_arch = FrameDescription::standard(Arch::X86_64);
    let refused = heap.emit_code_with_unwind(&code, wrong_arch);
    assert!(matches!(refused, Err(Error::Unwind(_))), "{refused:?}");
    assert_eq!(heap.page_allocator().stats().secondary_slots_used, slots);
    assert_eq!(registrar.live(), [entry]);
    assert_eq!(heap.stats().live_blocks, 1);

    heap.free(block).unwrap();
    assert!(registrar.live().is_empty());
    heap.check_invariants().unwrap();
}
